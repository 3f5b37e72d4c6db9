"""transformers CLIPModel checkpoints read as saved: same numbers as transformers itself.

A tiny random ``CLIPModel`` is built and ``save_pretrained`` here (nothing downloads);
clipsharp's logits and its interpolation endpoints are checked against transformers'
own forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSNAMES, invoke, tiny_clip
from safetensors.torch import save_file

from clipsharp.core.checkpoint import load_checkpoint
from clipsharp.core.models import ZeroShotHeads, build_tokenizer, load_templates
from clipsharp.core.workspace import open_checkpoints
from clipsharp.errors import CheckpointError

transformers = pytest.importorskip("transformers")


def hf_image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """transformers' own image embedding: (B, 3, H, W) -> (B, E), not normalised."""
    return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)


def hf_text_features(model, ids: torch.Tensor) -> torch.Tensor:
    return model.text_projection(model.text_model(input_ids=ids).pooler_output)


def logit_gap(model, folder: Path, prompts: list[str], images: int, seed: int) -> float:
    """The largest difference between transformers' logits_per_image and clipsharp's
    (logit_scale * image features . normalised text features) on random images."""
    _, arch, classifier = open_checkpoints({"model": folder})
    ids = build_tokenizer(arch)(prompts)
    pixels = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        theirs = model(input_ids=ids, pixel_values=pixels).logits_per_image
        text = F.normalize(classifier.model.encode_text(ids), dim=-1)
        ours = classifier.model.logit_scale.exp() * classifier.features(pixels) @ text.T
    return float((ours - theirs).abs().max())


@pytest.mark.parametrize("role", ["zero_shot", "fine_tuned"])
def test_logits_equal_transformers(hf_pair, role):
    folder = getattr(hf_pair, role)
    model = transformers.CLIPModel.from_pretrained(folder).eval()
    _, arch, classifier = open_checkpoints({"model": folder})
    tokenizer = build_tokenizer(arch)
    prompts = ["a photo of a red square.", "green", "a blurry photo of the blue thing."]
    ids = tokenizer(prompts)
    pixels = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model(input_ids=ids, pixel_values=pixels).logits_per_image
        text = F.normalize(classifier.model.encode_text(ids), dim=-1)
        ours = classifier.model.logit_scale.exp() * classifier.features(pixels) @ text.T
    assert (ours - theirs).abs().max() < 1e-4

    # the zero-shot head clipsharp classifies with: prompts of every template, averaged
    templates = load_templates("openai")
    heads = ZeroShotHeads(classifier, tokenizer, templates)
    with torch.no_grad():
        logits = classifier.logits(pixels, heads.get(CLASSNAMES))
        head = hf_head(model, templates, arch.model_cfg["text_cfg"]["context_length"])
        expected = model.logit_scale.exp() * F.normalize(hf_image_features(model, pixels)) @ head
    assert (logits - expected).abs().max() < 1e-4


def hf_head(model, templates, context_length: int) -> torch.Tensor:
    """(E, C): per class, the normalised mean of its normalised prompt embeddings."""
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    columns = []
    for name in CLASSNAMES:
        texts = [t(name) if callable(t) else t.format(name) for t in templates]
        embedded = F.normalize(hf_text_features(model, tokenizer(texts)), dim=-1)
        columns.append(F.normalize(embedded.mean(0), dim=-1))
    return torch.stack(columns, dim=1)


def plain_hf_metrics(folder: Path, dataset: Path) -> tuple[float, float]:
    """An independent evaluation: transformers' model, a plain loop, open_clip's transform."""
    import datasets
    import open_clip

    model = transformers.CLIPModel.from_pretrained(folder).eval()
    transform = open_clip.image_transform(32, is_train=False)
    rows = datasets.load_from_disk(str(dataset))
    correct, losses = 0, []
    with torch.no_grad():
        head = hf_head(model, open_clip.OPENAI_IMAGENET_TEMPLATES, 16)
        for row in rows:
            image = transform(row["image"].convert("RGB")).unsqueeze(0)
            features = F.normalize(hf_image_features(model, image), dim=-1)
            logits = model.logit_scale.exp() * features @ head
            correct += int(logits.argmax(-1).item() == row["label"])
            losses.append(F.cross_entropy(logits, torch.tensor([row["label"]])).item())
    return correct / len(rows), sum(losses) / len(losses)


def test_interpolate_endpoints_equal_transformers(hf_pair, pair, tmp_path):
    report = tmp_path / "path.json"
    args = ["interpolate", hf_pair.zero_shot, hf_pair.fine_tuned, "--id", pair.in_dist]
    result = invoke(*args, "--ood", pair.shifted, "--alphas", "0,0.5,1", "-o", report)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["inputs"]["architecture"]["source"] == "transformers config.json"
    at = {point["alpha"]: point["metrics"] for point in doc["results"]["path"]}
    for alpha, folder in ((0.0, hf_pair.zero_shot), (1.0, hf_pair.fine_tuned)):
        for name, dataset in (("in_dist", pair.in_dist), ("shifted", pair.shifted)):
            accuracy, loss = plain_hf_metrics(folder, dataset)
            assert at[alpha][name]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
            assert at[alpha][name]["loss"] == pytest.approx(loss, abs=1e-4)
    assert at[0.5]["shifted"]["loss"] != at[0.0]["shifted"]["loss"]  # the path moves


def test_layerwise_and_sharpness_run_on_a_transformers_pair(hf_pair, pair, tmp_path):
    layers = tmp_path / "layers.json"
    pair_args = [hf_pair.zero_shot, hf_pair.fine_tuned, "--ood", pair.shifted, "--limit", "8"]
    result = invoke("layerwise", *pair_args, "--alphas", "0,1", "-o", layers)
    assert result.exit_code == 0, result.output
    rows = json.loads(layers.read_text())["results"]["layers"]
    names = {row["layer"] for row in rows}
    assert {"visual.embed", "visual.block.0", "visual.block.1", "visual.head"} <= names
    sharp = tmp_path / "sharp.json"
    args = ["--alphas", "0,1", "--rho", "0.05", "--iterations", "2", "-o", sharp]
    result = invoke("sharpness", *pair_args, *args)
    assert result.exit_code == 0, result.output
    assert json.loads(sharp.read_text())["command"] == "sharpness"


def test_sharded_folder_loads_as_the_single_file(hf_pair):
    sharded = load_checkpoint(hf_pair.sharded)
    single = load_checkpoint(hf_pair.zero_shot)
    assert len(sharded.files) > 1
    assert sharded.tensors.keys() == single.tensors.keys()
    assert all(torch.equal(sharded.tensors[k], t) for k, t in single.tensors.items())
    by_index = load_checkpoint(hf_pair.sharded / "model.safetensors.index.json")
    assert by_index.tensors.keys() == single.tensors.keys()
    # the weights file alone, with config.json beside it
    by_file = load_checkpoint(hf_pair.zero_shot / "model.safetensors")
    assert by_file.sha256 == single.sha256 and by_file.metadata == single.metadata


def test_open_clip_keys_and_layer_groups(hf_pair):
    from clipsharp.core.layers import layer_groups

    tensors = load_checkpoint(hf_pair.fine_tuned).tensors
    model = transformers.CLIPModel.from_pretrained(hf_pair.fine_tuned)
    q = model.state_dict()["vision_model.encoder.layers.1.self_attn.q_proj.weight"]
    assert torch.equal(tensors["visual.transformer.resblocks.1.attn.in_proj_weight"][:64], q)
    projection = model.state_dict()["visual_projection.weight"]
    assert torch.equal(tensors["visual.proj"], projection.T)
    assert not any("position_ids" in key for key in tensors)
    assert list(layer_groups(tensors))[:3] == ["visual.embed", "visual.block.0", "visual.block.1"]


def test_mixed_pair_with_an_equivalent_open_clip_config(hf_pair, tmp_path):
    """An open_clip file whose config is written differently but builds the same model."""
    config = {"embed_dim": 32, "quick_gelu": True,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                             "head_width": 32},
              "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 1}}  # fmt: skip
    zero_shot = tmp_path / "zs.safetensors"
    tensors = load_checkpoint(hf_pair.zero_shot).tensors
    save_file(tensors, str(zero_shot), metadata={"clipsharp.model_config": json.dumps(config)})
    result = invoke("inspect", zero_shot, hf_pair.fine_tuned, "-o", "-")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]["layers"]
    change = {row["layer"]: row["relative_change"] for row in rows}
    # the two files read as one architecture: fine_tuned_from moved the image tower only
    assert change["visual.head"] > 0
    assert all(change[layer] == 0.0 for layer in change if layer.startswith("text."))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"architectures": ["SiglipModel"], "model_type": "siglip"}, "transformers SiglipModel"),
        ({"architectures": ["CLIPVisionModel"]}, "transformers CLIPVisionModel"),
        ({"architectures": ["FancyNet"], "model_type": "fancy"}, "transformers FancyNet"),
    ],
    ids=["siglip", "vision-only", "unknown"],
)
def test_recognised_but_unsupported_models_one_line(tmp_path, config, expected):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    result = invoke("inspect", folder)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "reads transformers CLIPModel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_transformers_layouts(hf_pair, tmp_path):
    alone = tmp_path / "model.safetensors"
    alone.write_bytes((hf_pair.zero_shot / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="has no config.json beside it"):
        load_checkpoint(alone)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((hf_pair.zero_shot / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match="safe_serialization=True"):
        load_checkpoint(pickled)
    gelu = dict(json.loads((hf_pair.zero_shot / "config.json").read_text()))
    gelu["vision_config"] = {**gelu["vision_config"], "hidden_act": "gelu"}
    (pickled / "config.json").write_text(json.dumps(gelu))
    (pickled / "model.safetensors").write_bytes(alone.read_bytes())
    with pytest.raises(CheckpointError, match="one activation for both"):
        load_checkpoint(pickled)
    training = tmp_path / "run"  # a config.json of something else: not a transformers folder
    training.mkdir()
    (training / "config.json").write_text(json.dumps({"lr": 0.1}))
    with pytest.raises(CheckpointError, match="is a folder without a transformers config.json"):
        load_checkpoint(training)


def test_gelu_towers_and_layer_norm_eps_are_mapped(tmp_path):
    model = tiny_clip(3, text={"hidden_act": "gelu", "layer_norm_eps": 1e-6},
                      vision={"hidden_act": "gelu_pytorch_tanh"})  # fmt: skip
    model.save_pretrained(tmp_path / "gelu")
    _, arch, _ = open_checkpoints({"model": tmp_path / "gelu"})
    assert arch.model_cfg["quick_gelu"] is False
    assert arch.model_cfg["vision_cfg"]["act_kwargs"] == {"approximate": "tanh"}
    assert arch.model_cfg["text_cfg"]["norm_kwargs"] == {"eps": 1e-6}
    assert logit_gap(model, tmp_path / "gelu", ["a red thing", "blue"], 2, seed=1) < 1e-4


def test_a_pickle_points_to_convert(pair, tmp_path):
    pickled = tmp_path / "ft.pt"
    torch.save({"w": torch.zeros(1)}, pickled)
    result = invoke("inspect", pickled)
    assert result.exit_code == 2
    assert f"clipsharp convert {pickled} -o {tmp_path / 'ft.safetensors'}" in result.stderr


def test_model_name_with_a_slash_suggests_the_open_clip_name(pair):
    result = invoke("inspect", pair.fine_tuned, "--model", "ViT-B/32")
    assert result.exit_code == 2
    assert "unknown architecture 'ViT-B/32' (did you mean ViT-B-32," in result.stderr


def test_legacy_eos_token_id_pools_at_the_end_of_text_too(tmp_path):
    """Configs before transformers 4.31 say eos_token_id 2: transformers then pools at
    argmax(ids), which is CLIP BPE's end of text, as open_clip does."""
    model = tiny_clip(4, text={"eos_token_id": 2})
    model.save_pretrained(tmp_path / "legacy")
    prompts = ["a photo of a yellow thing", "red"]
    assert logit_gap(model, tmp_path / "legacy", prompts, 2, seed=2) < 1e-4


def test_a_text_tower_of_another_vocabulary_is_refused(hf_pair, tmp_path):
    folder = tmp_path / "other-vocab"
    folder.mkdir()
    config = json.loads((hf_pair.zero_shot / "config.json").read_text())
    config["text_config"] = {**config["text_config"], "vocab_size": 1000, "eos_token_id": 999}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(
        (hf_pair.zero_shot / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="is not CLIP's BPE"):
        load_checkpoint(folder)

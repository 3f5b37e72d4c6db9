"""Architectures, heads and pair validation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    TINY_CONFIG,
    fine_tune_like,
    run_options,
    save_checkpoint,
    tiny_model,
    workspace,
)
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import run_interpolation
from clipsharp.core.checkpoint import Checkpoint, load_checkpoint, validate_pair
from clipsharp.core.models import load_templates, resolve_architecture
from clipsharp.errors import CheckpointError, ConfigError, DatasetError


def run(pair, zero_shot, fine_tuned, *, alphas=(0.0, 1.0), templates="openai", model=None):
    """The workspace of (zero_shot, fine_tuned) on the shifted set, and its interpolate report."""
    options = run_options(alphas, templates=templates)
    ends = {"zero_shot": zero_shot, "fine_tuned": fine_tuned}
    ws = workspace(pair, options, checkpoints=ends, model=model)
    return ws, run_interpolation(ws, options).to_dict()


@pytest.fixture(scope="module")
def headed(pair, tmp_path_factory):
    """A pair with a stored head (C x D) whose fine-tuned head differs."""
    root = tmp_path_factory.mktemp("headed")
    gen = torch.Generator().manual_seed(5)
    state = tiny_model(0).state_dict()
    embed = TINY_CONFIG["embed_dim"]
    zs = {**state, "head.weight": torch.randn(4, embed, generator=gen) * 10,
          "head.bias": torch.randn(4, generator=gen)}  # fmt: skip
    ft = fine_tune_like(zs, seed=6)
    ft["head.weight"] = zs["head.weight"] + torch.randn(4, embed, generator=gen)
    return save_checkpoint(root / "zs.safetensors", zs), save_checkpoint(
        root / "ft.safetensors", ft
    )


def plain_stored_head_accuracy(path, dataset_path) -> tuple[float, float]:
    import datasets
    import open_clip
    from open_clip.model import CLIP

    state = load_file(str(path))
    weight, bias = state.pop("head.weight"), state.pop("head.bias")
    model = CLIP(**TINY_CONFIG).eval()
    model.load_state_dict(state)
    transform = open_clip.image_transform(32, is_train=False)
    rows = datasets.load_from_disk(str(dataset_path))
    images = torch.stack([transform(r["image"].convert("RGB")) for r in rows])
    labels = torch.tensor(rows["label"])
    with torch.no_grad():
        logits = F.normalize(model.encode_image(images), dim=-1) @ weight.T + bias
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    return accuracy, F.cross_entropy(logits, labels).item()


def test_stored_head_is_used_and_interpolated(pair, headed):
    ws, doc = run(pair, *headed)
    assert doc["config"]["head"] == "stored" and ws.heads.encodings == 0
    path = {p["alpha"]: p["metrics"]["shifted"] for p in doc["results"]["path"]}
    for alpha, checkpoint in ((0.0, headed[0]), (1.0, headed[1])):
        accuracy, loss = plain_stored_head_accuracy(checkpoint, pair.shifted)
        assert path[alpha]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert path[alpha]["loss"] == pytest.approx(loss, rel=1e-5)
    assert path[0.0] != path[1.0]  # the head moved with the rest


def test_moving_text_tower_reencodes_the_head_at_every_alpha(pair, tmp_path):
    state = load_file(str(pair.fine_tuned))
    state["ln_final.weight"] = state["ln_final.weight"] * 1.5
    fine_tuned = save_checkpoint(tmp_path / "ft_text.safetensors", state)
    ws, doc = run(pair, pair.zero_shot, fine_tuned, alphas=(0.0, 0.5, 1.0))
    assert ws.heads.encodings == 3


def test_template_file_changes_the_head(pair, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("a drawing of {}.\n\nthe colour {}\n")
    assert load_templates(str(templates)) == ["a drawing of {}.", "the colour {}"]
    _, openai = run(pair, pair.zero_shot, pair.fine_tuned)
    _, custom = run(pair, pair.zero_shot, pair.fine_tuned, templates=str(templates))
    assert openai["results"]["path"][0] != custom["results"]["path"][0]


@pytest.mark.parametrize("content", ["no placeholder here\n", ""])
def test_bad_template_file(tmp_path, content):
    path = tmp_path / "t.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match="must hold"):
        load_templates(str(path))


def test_architecture_from_open_clip_config_json_beside_the_file(pair, tmp_path):
    folder = tmp_path / "hub-layout"
    folder.mkdir()
    path = save_checkpoint(
        folder / "open_clip_model.safetensors", load_file(str(pair.fine_tuned)), None
    )
    hub = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(hub))
    arch = resolve_architecture(load_checkpoint(path))
    assert arch.model_cfg == TINY_CONFIG and arch.preprocess_cfg["mean"] == [0.5] * 3
    assert arch.source.endswith("open_clip_config.json")


def test_architecture_by_name_and_by_json_file(pair, tmp_path):
    ckpt = load_checkpoint(pair.fine_tuned)
    named = resolve_architecture(ckpt, "ViT-B-32")
    assert named.name == "ViT-B-32" and named.model_cfg["vision_cfg"]["patch_size"] == 32
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    assert resolve_architecture(ckpt, str(config)).model_cfg == TINY_CONFIG


def test_wrong_architecture_names_the_missing_key(pair):
    with pytest.raises(CheckpointError, match="has no key visual.* of architecture ViT-B-32"):
        run(pair, pair.zero_shot, pair.fine_tuned, model="ViT-B-32")


def _ckpt(name, **tensors):
    return Checkpoint(path=__import__("pathlib").Path(name), tensors=tensors, metadata={})


def test_pair_validation_names_the_offending_key():
    a = _ckpt("zs.safetensors", w=torch.zeros(2), n=torch.tensor([1, 2]))
    with pytest.raises(CheckpointError, match="only ft.safetensors has extra"):
        validate_pair(
            a,
            _ckpt("ft.safetensors", w=torch.zeros(2), n=torch.tensor([1, 2]), extra=torch.zeros(1)),
        )
    with pytest.raises(CheckpointError, match="at w: dtype torch.float32"):
        validate_pair(a, _ckpt("ft.safetensors", w=torch.zeros(2).half(), n=torch.tensor([1, 2])))
    with pytest.raises(CheckpointError, match="integer tensor n"):
        validate_pair(a, _ckpt("ft.safetensors", w=torch.ones(2), n=torch.tensor([1, 3])))
    validate_pair(a, _ckpt("ft.safetensors", w=torch.ones(2), n=torch.tensor([1, 2])))


def test_stored_head_maps_a_subset_dataset_by_class_name(pair, headed, tmp_path):
    """ImageNet-R style: the dataset's classes are some of the head's, in another order."""
    import datasets
    import open_clip
    from conftest import coloured_images
    from open_clip.model import CLIP

    images, labels = coloured_images(12, seed=7)  # colours red, green, blue, yellow
    keep = [i for i, label in enumerate(labels) if label in (2, 0)]  # blue and red only
    names = ["blue", "red"]
    subset_labels = [names.index(["red", "green", "blue", "yellow"][labels[i]]) for i in keep]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    rows = {"image": [images[i] for i in keep], "label": subset_labels}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "subset"))
    head_names = tmp_path / "head.txt"
    head_names.write_text("red\ngreen\nblue\nyellow\n")

    options = run_options((0.0, 1.0), head_classnames=head_names)
    ends, subset = {"zero_shot": headed[0], "fine_tuned": headed[1]}, [(tmp_path / "subset", "ood")]
    ws = workspace(pair, options, checkpoints=ends, datasets=subset)
    doc = run_interpolation(ws, options).to_dict()
    measured = doc["results"]["path"][-1]["metrics"]["subset"]

    state = load_file(str(headed[1]))
    weight, bias = state.pop("head.weight"), state.pop("head.bias")
    model = CLIP(**TINY_CONFIG).eval()
    model.load_state_dict(state)
    transform = open_clip.image_transform(32, is_train=False)
    x = torch.stack([transform(images[i].convert("RGB")) for i in keep])
    with torch.no_grad():
        logits = (F.normalize(model.encode_image(x), dim=-1) @ weight.T + bias)[:, [2, 0]]
    y = torch.tensor(subset_labels)
    assert measured["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert measured["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)

    with pytest.raises(DatasetError, match="give the head's class names"):
        workspace(pair, run_options((0.0, 1.0)), checkpoints=ends, datasets=subset)
    head_names.write_text("red\ngreen\npurple\nyellow\n")
    with pytest.raises(DatasetError, match="'blue' of a dataset is not among"):
        workspace(pair, options, checkpoints=ends, datasets=subset)


def test_a_tokenizer_that_cannot_be_had_is_a_clear_error(monkeypatch):
    import open_clip

    from clipsharp.core.models import Architecture, build_tokenizer

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    # an offline hub, whatever the local cache holds: open_clip's public entry point fails
    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    arch = Architecture("ViT-B-16-SigLIP", {"text_cfg": {}}, {}, "--model")
    with pytest.raises(CheckpointError, match="cannot build the tokenizer of architecture"):
        build_tokenizer(arch)

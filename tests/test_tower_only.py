"""Image-tower-only checkpoints (WiSE-FT's keep_lang=False, model soups, task vectors): the
text transformer absent, a stored head present, through every analysis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    CLASSNAMES,
    TINY_CONFIG,
    fine_tune_like,
    invoke,
    run_options,
    save_checkpoint,
    succeeds,
    tiny_model,
    workspace,
)
from safetensors import safe_open
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import run_interpolation
from clipsharp.core.checkpoint import Checkpoint, validate_pair
from clipsharp.core.layers import layer_groups
from clipsharp.errors import CheckpointError

ALPHAS = (0.0, 0.5, 1.0)


def without(state: dict, *prefixes: str) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def stored_head(model) -> dict:
    """WiSE-FT's ClassificationHead(normalize=True): logit_scale.exp() x the normalised
    zero-shot class embeddings, bias zero."""
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        columns = open_clip.build_zero_shot_classifier(
            model, tokenizer, CLASSNAMES, open_clip.SIMPLE_IMAGENET_TEMPLATES
        )  # (D, C), normalised
        weight = model.logit_scale.exp() * columns.T
    return {"head.weight": weight.contiguous(), "head.bias": torch.zeros(len(CLASSNAMES))}


@dataclass(frozen=True)
class Towers:
    zero_shot: Path  # WiSE-FT's layout: transformer.* deleted, the other text tensors kept
    fine_tuned: Path
    visual_zero_shot: Path  # visual.* and the head alone (a task-vectors-like encoder)
    visual_fine_tuned: Path
    headless: Path  # image-tower-only, no head (zero-shot and fine-tuned)
    headless_fine_tuned: Path
    full_zero_shot: Path  # the same zero-shot model with its text tower and head


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> Towers:
    root = tmp_path_factory.mktemp("towers")
    model = tiny_model(0)
    full = {**model.state_dict(), **stored_head(model)}
    tuned = fine_tune_like(full, seed=1)  # the image tower moved ...
    gen = torch.Generator().manual_seed(7)  # ... and the head, bias included
    tuned["head.weight"] = full["head.weight"] + torch.randn(4, 32, generator=gen)
    tuned["head.bias"] = torch.randn(4, generator=gen) * 0.5
    text = ("transformer.",)
    rest = ("transformer.", "token_embedding", "positional_embedding", "ln_final",
            "text_projection", "logit_scale")  # fmt: skip

    def save(name, state):
        return save_checkpoint(root / f"{name}.safetensors", state)

    return Towers(
        save("zs", without(full, *text)), save("ft", without(tuned, *text)),
        save("zs-visual", without(full, *rest)), save("ft-visual", without(tuned, *rest)),
        save("headless", without(full, "head.", *text)),
        save("headless-ft", without(tuned, "head.", *text)), save("zs-full", full),
    )  # fmt: skip


def plain_path(towers: Towers, dataset: Path) -> dict[float, tuple[float, float]]:
    """An independent loop: weights lerped key by key as WiSE-FT's wise_ft.py does
    ((1 - alpha) * zs + alpha * ft), then normalised image features . W^T + b."""
    import datasets
    import open_clip
    from open_clip.model import CLIP

    zs, ft = load_file(str(towers.zero_shot)), load_file(str(towers.fine_tuned))
    transform = open_clip.image_transform(32, is_train=False)
    rows = datasets.load_from_disk(str(dataset))
    images = torch.stack([transform(r["image"].convert("RGB")) for r in rows])
    labels = torch.tensor(rows["label"])
    found = {}
    for alpha in ALPHAS:
        theta = {key: (1 - alpha) * zs[key] + alpha * ft[key] for key in zs}
        model = CLIP(**TINY_CONFIG).eval()  # random text tower: never used below
        missing = model.load_state_dict(without(theta, "head."), strict=False).missing_keys
        assert all(key.startswith("transformer.") for key in missing)
        with torch.no_grad():
            features = F.normalize(model.encode_image(images), dim=-1)
            logits = features @ theta["head.weight"].T + theta["head.bias"]
        accuracy = (logits.argmax(-1) == labels).double().mean().item()
        found[alpha] = accuracy, F.cross_entropy(logits, labels).item()
    return found


def args(towers: Towers, pair, *extra) -> list:
    return [towers.zero_shot, towers.fine_tuned, "--id", pair.in_dist, "--ood", pair.shifted,
            "--device", "cpu", *extra]  # fmt: skip


def report(*cli_args) -> dict:
    """The report ``clipsharp CLI_ARGS -o -`` prints."""
    return json.loads(succeeds(*cli_args, "-o", "-").stdout)


def test_interpolate_equals_an_independent_loop(pair, towers):
    options = run_options(ALPHAS)
    ends = {"zero_shot": towers.zero_shot, "fine_tuned": towers.fine_tuned}
    ws = workspace(pair, options, checkpoints=ends, datasets=[(pair.shifted, "ood")])
    assert not hasattr(ws.classifier.model, "transformer")  # no weight left as allocated
    assert ws.classifier.tensors.keys() == load_file(str(towers.fine_tuned)).keys()
    doc = run_interpolation(ws, options).to_dict()
    assert doc["config"]["head"] == "stored" and ws.heads.encodings == 0
    measured = {p["alpha"]: p["metrics"]["shifted"] for p in doc["results"]["path"]}
    for alpha, (accuracy, loss) in plain_path(towers, pair.shifted).items():
        assert measured[alpha]["accuracy"] == pytest.approx(accuracy, abs=1e-12), alpha
        assert measured[alpha]["loss"] == pytest.approx(loss, rel=1e-5), alpha
    assert measured[0.0] != measured[1.0]


def test_without_any_text_tensor_the_numbers_are_the_same(pair, towers):
    """The text tensors WiSE-FT keeps are unused: dropping them too changes no number."""
    kept = report("interpolate", *args(towers, pair))
    alone = report(
        "interpolate", towers.visual_zero_shot, towers.visual_fine_tuned, *args(towers, pair)[2:]
    )
    assert alone["results"]["path"] == kept["results"]["path"]
    layers = report("inspect", towers.visual_fine_tuned)
    assert {row["tower"] for row in layers["results"]["layers"]} == {"image", "other"}
    assert layers["summary"]["text_tower"] is False


def test_layer_groups_list_only_what_exists(towers):
    keys = load_file(str(towers.fine_tuned)).keys()
    groups = layer_groups(keys)
    assert not any(name.startswith("text.block.") for name in groups)
    assert [name for name in groups if name.startswith("text.")] == ["text.embed", "text.head"]
    assert sorted(k for ks in groups.values() for k in ks) == sorted(keys)


def test_layerwise_moves_only_existing_layers(pair, towers):
    doc = json.loads(
        succeeds("layerwise", *args(towers, pair, "--alphas", "0,1"), "-o", "-").stdout
    )
    rows = {row["layer"]: row for row in doc["results"]["layers"]}
    assert list(rows) == list(layer_groups(load_file(str(towers.fine_tuned))))
    assert rows["text.embed"]["unchanged"] and rows["text.head"]["unchanged"]
    assert not rows["visual.block.0"]["unchanged"] and not rows["head"]["unchanged"]


def test_sharpness_perturbs_the_image_tower(pair, towers):
    doc = report("sharpness", *args(towers, pair, "--alphas", "1", "--iterations", "2",
                                    "--rho", "0.1"))  # fmt: skip
    layers = doc["config"]["perturbed_layers"]
    assert layers == ["visual.embed", "visual.block.0", "visual.block.1", "visual.head"]
    path = report("interpolate", *args(towers, pair, "--alphas", "1"))["results"]["path"]
    clean = doc["results"]["points"][0]["metrics"]["shifted"]["clean_loss"]
    assert clean == pytest.approx(path[-1]["metrics"]["shifted"]["loss"], rel=1e-9)


def test_stragglers_rank_the_image_tower(pair, towers):
    doc = report("stragglers", *args(towers, pair, "--iterations", "2", "--rho", "0.3",
                                     "--top-k", "1"))  # fmt: skip
    rows = doc["results"]["layers"]
    assert [r["layer"] for r in rows] == ["visual.embed", "visual.block.0", "visual.block.1",
                                          "visual.head"]  # fmt: skip
    assert {r["tower"] for r in rows} == {"image"} and len(doc["summary"]["stragglers"]) == 1


def test_prune_and_merge_write_the_same_layout_back(pair, towers, tmp_path):
    pruned, merged = tmp_path / "pruned.safetensors", tmp_path / "merged.safetensors"
    succeeds("prune", towers.fine_tuned, "--layers", "visual.block.1", "--sparsity", "0.5",
             "-o", pruned)  # fmt: skip
    succeeds("merge", towers.zero_shot, towers.fine_tuned, "--alpha", "0.5", "-o", merged)
    zs, ft = load_file(str(towers.zero_shot)), load_file(str(towers.fine_tuned))
    for output in (pruned, merged):
        assert load_file(str(output)).keys() == ft.keys()  # no text tower invented
    weight = load_file(str(pruned))["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    assert int((weight == 0).sum()) == weight.numel() // 2
    half = load_file(str(merged))
    for key in ft:
        torch.testing.assert_close(half[key], (zs[key] + ft[key]) / 2, rtol=1e-6, atol=1e-7)
    with safe_open(str(merged), framework="pt") as handle:
        assert json.loads(handle.metadata()["clipsharp.model_config"]) == TINY_CONFIG
    again = report("interpolate", towers.zero_shot, merged, "--ood", pair.shifted,
                   "--alphas", "0,1", "--device", "cpu")  # fmt: skip
    assert again["config"]["head"] == "stored"


def test_study_of_tower_only_models(pair, towers, tmp_path):
    second = tmp_path / "ft2.safetensors"
    state = load_file(str(towers.fine_tuned))
    save_checkpoint(second, fine_tune_like(state, seed=3))
    output = tmp_path / "study.json"
    succeeds("study", towers.zero_shot, towers.fine_tuned, second, "--id", pair.in_dist,
             "--ood", pair.shifted, "--device", "cpu", "--alphas", "0,0.5,1",
             "--sharpness-alphas", "1", "--iterations", "2", "--rho", "0.3", "--top-k", "1",
             "-o", output)  # fmt: skip
    rows = json.loads(output.read_text())["results"]["checkpoints"]
    assert [row["name"] for row in rows] == ["ft", "ft2"]
    for row in rows:
        assert row["measures"]["relative_change_text"] == 0.0  # leftovers unchanged
        assert row["measures"]["relative_change"] > 0


def one_line_error(result, expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["sharpness", "stragglers"])
def test_include_text_says_there_is_no_text_tower(pair, towers, command):
    result = invoke(command, *args(towers, pair, "--include-text", "--iterations", "1"))
    one_line_error(result, "--include-text needs a text tower, which")
    assert "ft.safetensors lacks (image-tower-only" in result.stderr


def test_no_head_and_no_text_tower_is_refused_but_inspected(pair, towers):
    result = invoke("interpolate", towers.headless, towers.headless_fine_tuned,
                    "--ood", pair.shifted, "--device", "cpu")  # fmt: skip
    one_line_error(result, "headless-ft.safetensors is image-tower-only (no text transformer")
    single = invoke("sharpness", towers.headless, "--ood", pair.shifted, "--device", "cpu")
    one_line_error(single, "headless.safetensors is image-tower-only")
    assert "a zero-shot head needs a text tower" in single.stderr
    doc = report("inspect", towers.headless)
    assert doc["summary"]["head"] == "none" and doc["summary"]["text_tower"] is False


def test_a_mixed_pair_is_refused(pair, towers):
    result = invoke("interpolate", towers.full_zero_shot, towers.fine_tuned, "--ood",
                    pair.shifted, "--device", "cpu")  # fmt: skip
    one_line_error(result, "ft.safetensors is image-tower-only")
    assert "zs-full.safetensors has a text tower" in result.stderr
    zs, ft = load_file(str(towers.zero_shot)), load_file(str(towers.fine_tuned))
    validate_pair(Checkpoint(Path("a"), zs, {}), Checkpoint(Path("b"), ft, {}))  # same layout
    with pytest.raises(CheckpointError, match="only b has"):
        validate_pair(Checkpoint(Path("a"), without(zs, "ln_final"), {}),
                      Checkpoint(Path("b"), ft, {}))  # fmt: skip

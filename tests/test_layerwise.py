"""Layer-wise interpolation: grouping, per-layer paths against plain evaluations, no leaks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    TINY_CONFIG,
    invoke,
    plain_metrics,
    run_options,
    save_checkpoint,
    tiny_model,
    workspace,
)
from safetensors.torch import load_file

from clipsharp.analyses.layerwise import Layerwise, run_layerwise
from clipsharp.core.layers import layer_groups, select_layers
from clipsharp.core.prefix import vit_depth
from clipsharp.errors import ConfigError
from clipsharp.options import LayerwiseOptions

OPTIONS = run_options(batch_size=8)


def resnet_state() -> dict:
    from open_clip.model import CLIP

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["vision_cfg"] = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}
    return CLIP(**cfg).state_dict()


@pytest.mark.parametrize("state", [tiny_model().state_dict(), resnet_state()], ids=["vit", "rn"])
@pytest.mark.parametrize("granularity", ["block", "module", "tensor"])
def test_every_key_in_exactly_one_group(state, granularity):
    groups = layer_groups(state, granularity)
    flat = [key for keys in groups.values() for key in keys]
    assert sorted(flat) == sorted(state) and len(flat) == len(set(flat))


def test_vit_block_names_and_resnet_fallback():
    vit = layer_groups(tiny_model().state_dict())
    assert list(vit) == ["visual.embed", "visual.block.0", "visual.block.1", "visual.head",
                         "text.embed", "text.block.0", "text.head", "logit_scale"]  # fmt: skip
    assert set(vit["visual.head"]) == {
        "visual.ln_post.weight",
        "visual.ln_post.bias",
        "visual.proj",
    }
    rn = layer_groups(resnet_state())
    assert "visual.layer1.0" in rn and "visual.attnpool" in rn and "visual.embed" not in rn
    assert all(k.startswith("visual.layer3.0.") for k in rn["visual.layer3.0"])
    module = layer_groups(tiny_model().state_dict(), "module")
    assert module["visual.ln_pre"] == ["visual.ln_pre.weight", "visual.ln_pre.bias"]
    assert module["visual.proj"] == ["visual.proj"]


def test_select_layers_globs_and_errors():
    names = ["visual.embed", "visual.block.0", "visual.block.1", "text.block.0"]
    assert select_layers(names, "visual.block.*") == ["visual.block.0", "visual.block.1"]
    assert select_layers(names, "text.block.0, visual.embed") == ["visual.embed", "text.block.0"]
    with pytest.raises(ConfigError, match="valid names: visual.embed, visual.block.0"):
        select_layers(names, "visual.block.9")


def test_layer_endpoints_equal_plain_evaluations(pair):
    doc = run_layerwise(workspace(pair, OPTIONS), OPTIONS, LayerwiseOptions()).to_dict()
    zs, ft = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    fine_tuned_acc, fine_tuned_loss = plain_metrics(ft, pair.shifted)
    for row in doc["results"]["layers"]:
        if row["unchanged"]:
            assert "path" not in row and row["layer"].startswith(("text.", "logit"))
            continue
        path = {p["alpha"]: p["metrics"]["shifted"] for p in row["path"]}
        assert path[1.0]["accuracy"] == pytest.approx(fine_tuned_acc, abs=1e-12)
        assert path[1.0]["loss"] == pytest.approx(fine_tuned_loss, rel=1e-4)
        mixed = {**ft, **{key: zs[key] for key in row["tensors"]}}
        accuracy, loss = plain_metrics(mixed, pair.shifted)
        assert path[0.0]["accuracy"] == pytest.approx(accuracy, abs=1e-12), row["layer"]
        assert path[0.0]["loss"] == pytest.approx(loss, rel=1e-4), row["layer"]


def test_background_zs_moves_one_layer_toward_fine_tuned(pair):
    layer_options = LayerwiseOptions(background="zs", layers="visual.head")
    doc = run_layerwise(workspace(pair, OPTIONS), OPTIONS, layer_options).to_dict()
    (row,) = doc["results"]["layers"]
    zs, ft = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    path = {p["alpha"]: p["metrics"]["shifted"] for p in row["path"]}
    assert path[0.0]["accuracy"] == pytest.approx(plain_metrics(zs, pair.shifted)[0], abs=1e-12)
    mixed = {**zs, **{key: ft[key] for key in row["tensors"]}}
    assert path[1.0]["loss"] == pytest.approx(plain_metrics(mixed, pair.shifted)[1], rel=1e-4)


@pytest.mark.parametrize("background", ["ft", "zs"])
def test_nothing_leaks_between_layers(pair, background):
    """At every point, only the tensors of one layer group differ from the background, and
    each point's undo brings the background back bit for bit."""
    ws = workspace(pair, OPTIONS)
    home = load_file(str(pair.fine_tuned if background == "ft" else pair.zero_shot))
    group_of = {key: layer for layer, keys in layer_groups(home).items() for key in keys}

    def moved_groups():
        moved = {k for k, v in home.items() if not torch.equal(ws.classifier.tensors[k], v)}
        return {group_of[k] for k in moved}

    points = Layerwise(OPTIONS, LayerwiseOptions(background=background)).points(ws)
    seen = []
    with ws.restoring():
        for point in points:
            point.write()
            seen.append(moved_groups())
            point.undo()
            assert moved_groups() == set(), point.key
    assert seen[0] == set()  # the background itself
    assert all(len(groups) == 1 for groups in seen[1:]), seen
    assert len(seen) == 1 + 4 * 2  # 4 changed layers x (alphas 0 and 0.5, or 0.5 and 1)


def test_moving_text_layer_reencodes_the_head_only_for_that_layer(pair, tmp_path):
    state = load_file(str(pair.fine_tuned))
    state["ln_final.weight"] = state["ln_final.weight"] * 1.5
    text_moved = save_checkpoint(tmp_path / "ft_text.safetensors", state)
    ws = workspace(
        pair, OPTIONS, checkpoints={"zero_shot": pair.zero_shot, "fine_tuned": text_moved}
    )
    doc = run_layerwise(ws, OPTIONS, LayerwiseOptions()).to_dict()
    changed = [r["layer"] for r in doc["summary"]["layers"] if not r["unchanged"]]
    assert "text.head" in changed
    # the background (1) + text.head at alpha 0 and 0.5 (2); the image layers reuse the
    # background's head, and text.head is the last layer evaluated
    assert ws.heads.encodings == 3


def test_summary_recomputed_from_the_layer_paths(pair):
    doc = run_layerwise(
        workspace(pair, OPTIONS), OPTIONS, LayerwiseOptions(collapse_threshold=0.0)
    ).to_dict()
    rows = {r["layer"]: r for r in doc["results"]["layers"]}
    for summary in doc["summary"]["layers"]:
        if summary["unchanged"]:
            continue
        path = rows[summary["layer"]]["path"]
        acc = [p["metrics"]["shifted"]["accuracy"] for p in path]
        loss = [p["metrics"]["shifted"]["loss"] for p in path]
        s = summary["shifted"]
        assert s["gain"] == pytest.approx(max(acc) - acc[0])
        assert s["depth"] == pytest.approx(max(loss) - loss[0])
        assert s["collapse"] == (min(acc) < min(acc[0], acc[-1]))


def test_cli_layerwise_and_unknown_layer(pair):
    args = ["layerwise", pair.zero_shot, pair.fine_tuned, "--ood", pair.shifted,
            "--device", "cpu", "--alphas", "0,1"]  # fmt: skip
    result = invoke(*args, "--layers", "visual.block.*", "-o", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["layer"] for r in doc["results"]["layers"]] == ["visual.block.0", "visual.block.1"]
    assert "visual.block.0" in result.stderr  # the table
    result = invoke(*args, "--layers", "visual.block.7")
    assert result.exit_code == 2
    assert "valid names: visual.embed, visual.block.0, visual.block.1" in result.stderr
    result = invoke(*args, "--background", "middle")
    assert result.exit_code == 2 and "--background 'middle'" in result.stderr


@pytest.mark.parametrize("granularity", ["block", "module"])
@pytest.mark.parametrize("background", ["ft", "zs"])
def test_prefix_cache_gives_bit_identical_metrics(pair, tmp_path, granularity, background):
    state = load_file(str(pair.fine_tuned))
    state["ln_final.weight"] = state["ln_final.weight"] * 1.5  # a text layer moves too
    text_moved = save_checkpoint(tmp_path / "ft_text.safetensors", state)
    ws = workspace(
        pair, OPTIONS, checkpoints={"zero_shot": pair.zero_shot, "fine_tuned": text_moved}
    )
    results = []
    for cached in (True, False):
        layer_options = LayerwiseOptions(granularity, background, prefix_cache=cached)
        doc = run_layerwise(ws, OPTIONS, layer_options).to_dict()
        results.append(doc["results"]["layers"])
    assert results[0] == results[1]  # every metric, exactly


def test_prefix_cache_skips_the_layers_below(pair):
    """With the cache, a point of visual.head runs no transformer block."""

    ws = workspace(pair, OPTIONS)
    calls = []
    for block in ws.classifier.model.visual.transformer.resblocks:
        block.register_forward_hook(lambda module, args, output: calls.append(module))
    run_layerwise(ws, OPTIONS, LayerwiseOptions(layers="visual.head"))
    n_batches = -(-20 // OPTIONS.eval.batch_size)  # the shifted set, batches of 8
    depth = vit_depth(ws.classifier)
    # background (every block) + building the cache (every block) + 2 points (no block)
    assert len(calls) == 2 * depth * n_batches


def test_resnet_clip_end_to_end(pair, tmp_path):
    """A ResNet image tower: generic layer groups, no prefix cache, metrics as a plain loop."""

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["vision_cfg"] = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}
    from open_clip.model import CLIP

    torch.manual_seed(0)
    zs = CLIP(**cfg).state_dict()
    ft = {k: v + 0.1 * torch.randn_like(v) if k.startswith("visual.") and v.is_floating_point()
          else v.clone() for k, v in zs.items()}  # fmt: skip
    zs_path = save_checkpoint(tmp_path / "rn_zs.safetensors", zs, cfg)
    ft_path = save_checkpoint(tmp_path / "rn_ft.safetensors", ft, cfg)
    ws = workspace(pair, OPTIONS, checkpoints={"zero_shot": zs_path, "fine_tuned": ft_path})
    assert vit_depth(ws.classifier) is None
    doc = run_layerwise(ws, OPTIONS, LayerwiseOptions(layers="visual.layer*")).to_dict()
    rows = doc["results"]["layers"]
    assert [r["layer"] for r in rows] == [f"visual.layer{i}.0" for i in range(1, 5)]
    point = rows[0]["path"][0]["metrics"]["shifted"]  # layer1.0 back at zero-shot
    mixed = {**ft, **{k: zs[k] for k in rows[0]["tensors"]}}
    model = CLIP(**cfg).eval()
    model.load_state_dict(mixed)
    import datasets
    import open_clip

    transform = open_clip.image_transform(32, is_train=False)
    data = datasets.load_from_disk(str(pair.shifted))
    x = torch.stack([transform(r["image"].convert("RGB")) for r in data])
    y = torch.tensor(data["label"])
    with torch.no_grad():
        head = open_clip.build_zero_shot_classifier(
            model, open_clip.SimpleTokenizer(context_length=16), ["red", "green", "blue", "yellow"],
            open_clip.OPENAI_IMAGENET_TEMPLATES,
        )  # fmt: skip
        logits = (
            model.logit_scale.exp()
            * torch.nn.functional.normalize(model.encode_image(x), dim=-1)
            @ head
        )
    assert point["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert point["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-4
    )

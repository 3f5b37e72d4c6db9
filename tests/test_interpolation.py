"""The path: weights against the formula, metrics against a plain loop, summaries recomputed."""

from __future__ import annotations

import hashlib
import math
import time

import pytest
import torch
from conftest import plain_metrics, run_options, save_checkpoint, workspace
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import run_interpolation
from clipsharp.core.checkpoint import load_checkpoint
from clipsharp.core.weights import WeightPath, endpoints, interpolate_weights, moving_keys
from clipsharp.options import PathOptions, parse_alphas

# 7: batches that do not divide the sets
OPTIONS = run_options((0.0, 0.3, 0.7, 1.0), batch_size=7)


def both(pair, options=OPTIONS):
    """A workspace of the pair on the ID and the OOD set."""
    return workspace(pair, options, datasets=[(pair.in_dist, "id"), (pair.shifted, "ood")])


@pytest.fixture(scope="module")
def timed_report(pair):
    """The report of a run, and the wall-clock seconds of the run measured around it."""
    started = time.perf_counter()
    doc = run_interpolation(both(pair), OPTIONS).to_dict()
    return doc, time.perf_counter() - started


@pytest.fixture(scope="module")
def report(timed_report):
    return timed_report[0]


def test_written_weights_follow_the_formula(pair):
    ws = both(pair)
    zs, ft = ws.checkpoints["zero_shot"], ws.checkpoints["fine_tuned"]
    path = WeightPath(ws.classifier, endpoints(zs, ft, moving_keys(zs, ft), ws.device))
    alpha = 0.37
    path.set_alpha(alpha)
    zs_raw, ft_raw = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    for key in zs_raw:
        expected = (1 - alpha) * zs_raw[key] + alpha * ft_raw[key]
        torch.testing.assert_close(ws.classifier.tensors[key], expected, rtol=1e-6, atol=1e-7)
    for alpha, raw in ((0.0, zs_raw), (1.0, ft_raw)):
        path.set_alpha(alpha)
        for key in raw:
            assert torch.equal(ws.classifier.tensors[key], raw[key]), (alpha, key)


def test_interpolate_weights_is_exact_at_the_endpoints(pair):
    zs, ft = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    assert all(torch.equal(v, zs[k]) for k, v in interpolate_weights(zs, ft, 0.0).items())
    assert all(torch.equal(v, ft[k]) for k, v in interpolate_weights(zs, ft, 1.0).items())
    half = interpolate_weights(zs, ft, 0.5)
    torch.testing.assert_close(half["visual.proj"], (zs["visual.proj"] + ft["visual.proj"]) / 2)


def test_only_the_image_tower_moves_and_the_head_is_encoded_once(pair):
    ws = both(pair)
    zs, ft = ws.checkpoints["zero_shot"], ws.checkpoints["fine_tuned"]
    keys = moving_keys(zs, ft)
    assert keys and all(k.startswith("visual.") for k in keys)
    run_interpolation(ws, OPTIONS)
    assert ws.heads.encodings == 1  # one class list, text tower never moved


def test_excluded_tensors_stay_fine_tuned(pair):
    zs, ft = load_checkpoint(pair.zero_shot), load_checkpoint(pair.fine_tuned)
    keys = moving_keys(zs, ft, exclude=r"^visual\.transformer")
    assert keys and not any(k.startswith("visual.transformer") for k in keys)
    assert "visual.proj" in keys


def test_endpoint_metrics_equal_a_plain_evaluation(pair, report):
    path = {p["alpha"]: p["metrics"] for p in report["results"]["path"]}
    for alpha, checkpoint in ((0.0, pair.zero_shot), (1.0, pair.fine_tuned)):
        for name, folder in (("in_dist", pair.in_dist), ("shifted", pair.shifted)):
            accuracy, loss = plain_metrics(load_file(str(checkpoint)), folder)
            measured = path[alpha][name]
            assert measured["accuracy"] == pytest.approx(accuracy, abs=1e-12)
            assert measured["loss"] == pytest.approx(loss, rel=1e-4)
            assert measured["num_examples"] == (24 if name == "in_dist" else 20)


def test_summary_fields_recomputed_from_the_path(report):
    alphas = [p["alpha"] for p in report["results"]["path"]]
    assert alphas == [0.0, 0.3, 0.7, 1.0]
    for dataset in report["inputs"]["datasets"]:
        name = dataset["name"]
        acc = [p["metrics"][name]["accuracy"] for p in report["results"]["path"]]
        loss = [p["metrics"][name]["loss"] for p in report["results"]["path"]]
        s = report["summary"][name]
        best = max(range(len(acc)), key=lambda i: (acc[i], -alphas[i]))
        assert s["best_alpha"] == alphas[best] and s["best_accuracy"] == acc[best]
        assert s["gain"] == pytest.approx(max(acc) - acc[0])
        assert s["gain_over_endpoints"] == pytest.approx(max(acc) - max(acc[0], acc[-1]))
        assert s["depth"] == pytest.approx(max(loss) - loss[0])
        chord = [(1 - a) * loss[0] + a * loss[-1] for a in alphas]
        assert s["barrier"] == pytest.approx(max(lo - c for lo, c in zip(loss, chord, strict=True)))
        if dataset["role"] == "ood":
            assert s["failure_mode"] == (s["gain"] <= 0.0)
        else:
            assert s["failure_mode"] is None


def test_report_contract(pair, timed_report):
    report, wall = timed_report
    assert report["schema"] == "clipsharp.report/1"
    assert report["command"] == "interpolate"
    ckpts = report["inputs"]["checkpoints"]
    assert ckpts["zero_shot"]["sha256"] == hashlib.sha256(pair.zero_shot.read_bytes()).hexdigest()
    assert ckpts["fine_tuned"]["model"] == "custom"
    assert [d["role"] for d in report["inputs"]["datasets"]] == ["id", "ood"]
    assert report["config"]["alphas"] == [0.0, 0.3, 0.7, 1.0]
    assert report["config"]["world_size"] == 1 and report["config"]["batch_size"] == 7
    seconds = report["timing"]["seconds"]  # the run's own clock, within the one around it
    assert isinstance(seconds, float) and 0 < seconds <= wall


def test_endpoints_are_always_measured(pair):
    options = run_options((0.5,), batch_size=7)
    doc = run_interpolation(both(pair, options), options).to_dict()
    assert [p["alpha"] for p in doc["results"]["path"]] == [0.0, 0.5, 1.0]


def test_working_model_is_back_at_fine_tuned_after_the_run(pair):
    ws = both(pair)
    run_interpolation(ws, OPTIONS)
    ft = load_file(str(pair.fine_tuned))
    assert all(torch.equal(ws.classifier.tensors[k], v) for k, v in ft.items())


def test_bf16_working_model_is_rounded_from_fp32_lerp(pair):
    options = run_options(OPTIONS.path.alphas, precision="bf16")
    ws = both(pair, options)
    zs, ft = ws.checkpoints["zero_shot"], ws.checkpoints["fine_tuned"]
    path = WeightPath(ws.classifier, endpoints(zs, ft, moving_keys(zs, ft), ws.device))
    path.set_alpha(0.5)
    expected = torch.lerp(zs.tensors["visual.proj"], ft.tensors["visual.proj"], 0.5).bfloat16()
    assert ws.classifier.tensors["visual.proj"].dtype == torch.bfloat16
    assert torch.equal(ws.classifier.tensors["visual.proj"], expected)
    doc = run_interpolation(ws, options).to_dict()
    assert all(not math.isnan(p["metrics"]["in_dist"]["loss"]) for p in doc["results"]["path"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,0.25,1", (0.0, 0.25, 1.0)),
        ("0:1:0.25", (0.0, 0.25, 0.5, 0.75, 1.0)),
        ("0:1:0.1", tuple(round(i / 10, 10) for i in range(11))),
        ("1,0,0.5,0.5", (0.0, 0.5, 1.0)),
    ],
)
def test_parse_alphas(text, expected):
    assert parse_alphas(text) == expected


@pytest.mark.parametrize("text", ["a,b", "1:0:0.1", "0:1:0", "0:1", "nan"])
def test_parse_alphas_refuses_nonsense(text):
    from clipsharp.errors import ConfigError

    with pytest.raises(ConfigError, match="--alphas"):
        parse_alphas(text)


def test_alphas_outside_unit_interval_need_extrapolate():
    from clipsharp.errors import ConfigError

    with pytest.raises(ConfigError, match="--extrapolate"):
        PathOptions(alphas=(0.0, 1.5))
    assert PathOptions(alphas=(-0.5, 1.5), extrapolate=True).alphas == (-0.5, 1.5)


def test_interior_alphas_with_a_moving_text_tower_equal_a_plain_evaluation(pair, tmp_path):
    """The head at alpha is the text tower's at alpha: each point's, found from its write."""
    zs, ft = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    moved = ft | {"ln_final.weight": ft["ln_final.weight"] * 1.5,
                  "token_embedding.weight": ft["token_embedding.weight"] * 0.5}  # fmt: skip
    fine_tuned = save_checkpoint(tmp_path / "ft_text.safetensors", moved)
    run = run_options((0.0, 0.25, 0.5, 1.0), batch_size=4, block_images=8)
    ws = workspace(pair, run, checkpoints={"zero_shot": pair.zero_shot, "fine_tuned": fine_tuned})
    path = {p["alpha"]: p["metrics"]["shifted"] for p in run_interpolation(ws, run).results["path"]}
    for alpha, measured in path.items():
        state = {k: torch.lerp(zs[k], moved[k], alpha) if zs[k].is_floating_point() else zs[k]
                 for k in zs}  # fmt: skip
        accuracy, loss = plain_metrics(state, pair.shifted)
        assert measured["accuracy"] == pytest.approx(accuracy, abs=1e-12), alpha
        assert measured["loss"] == pytest.approx(loss, rel=1e-4), alpha
    assert ws.heads.encodings == 4  # one per alpha, not per block

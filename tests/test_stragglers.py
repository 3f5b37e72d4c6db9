"""Stragglers: the reported straggler set follows from the reported values and the stated rule."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from conftest import invoke, reference_spearman

from clipsharp.analyses.stragglers import choose, robust_z
from clipsharp.options import StragglerOptions


def test_robust_z_against_numpy():
    values = [0.1, 0.12, 0.11, 0.13, 0.9, 0.1, 0.095]
    median = np.median(values)
    mad = np.median(np.abs(np.array(values) - median))
    expected = (np.array(values) - median) / (1.4826 * mad)
    assert robust_z(values) == pytest.approx(expected.tolist())
    flat = robust_z([1.0, 1.0, 1.0, 5.0])  # MAD = 0: the mean absolute deviation stands in
    assert flat[-1] == pytest.approx((5 - 1) / (1.2533 * statistics.fmean([0, 0, 0, 4])))
    assert robust_z([2.0, 2.0]) == [0.0, 0.0]


def test_rule_applies_within_each_tower():
    rows = [{"layer": f"visual.block.{i}", "tower": "image", "v": v}
            for i, v in enumerate([1, 1.1, 0.9, 1.05, 9])]  # fmt: skip
    rows += [{"layer": "text.block.0", "tower": "text", "v": 50.0},
             {"layer": "text.block.1", "tower": "text", "v": 49.0}]  # fmt: skip
    assert choose(rows, StragglerOptions(z=3.5), "v") == ["visual.block.4"]
    top = choose(rows, StragglerOptions(top_k=1), "v")
    assert top == ["text.block.0", "visual.block.4"]


@pytest.fixture(scope="module")
def layerwise_report(pair, tmp_path_factory):
    path = tmp_path_factory.mktemp("lw") / "layers.json"
    result = invoke("layerwise", pair.zero_shot, pair.fine_tuned, "--ood", pair.shifted,
                    "--alphas", "0,0.5,1", "--device", "cpu", "-o", path)  # fmt: skip
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("rule", [["--z", "0.5"], ["--top-k", "2"]])
def test_reported_stragglers_follow_from_reported_values(pair, layerwise_report, rule):
    result = invoke("stragglers", pair.zero_shot, pair.fine_tuned, "--id", pair.in_dist,
                    "--ood", pair.shifted, "--iterations", "3", "--rho", "0.5", "--device", "cpu",
                    "--layerwise", layerwise_report, *rule, "-o", "-")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = doc["results"]["layers"]
    assert [r["layer"] for r in rows] == ["visual.embed", "visual.block.0", "visual.block.1",
                                          "visual.head"]  # fmt: skip
    assert doc["summary"]["rank_on"] == "in_dist"
    values = [r["sharpness"] for r in rows]
    assert values == [r["metrics"]["in_dist"]["sharpness"] for r in rows]
    z = robust_z(values)
    assert [r["z"] for r in rows] == pytest.approx(z)
    if rule[0] == "--z":
        expected = {r["layer"] for r, zi in zip(rows, z, strict=True) if zi > 0.5}
        assert "z-score" in doc["summary"]["rule"] and "0.5" in doc["summary"]["rule"]
    else:
        expected = {r["layer"] for r in sorted(rows, key=lambda r: -r["sharpness"])[:2]}
    assert set(doc["summary"]["stragglers"]) == expected
    assert all(r["zero_shot_sharpness"] is not None for r in rows)
    depths = json.loads(layerwise_report.read_text())["summary"]["layers"]
    depth = {r["layer"]: r["shifted"]["depth"] for r in depths if not r["unchanged"]}
    expected_rho = reference_spearman(values, [depth[r["layer"]] for r in rows])
    assert doc["summary"]["spearman"]["shifted"]["spearman"] == pytest.approx(expected_rho)
    assert "layerwise" not in doc["config"]  # the report read is an input, not an option


def test_by_barrier_ranks_the_layerwise_depths(pair, layerwise_report, tmp_path):
    result = invoke("stragglers", pair.zero_shot, pair.fine_tuned, "--by", "barrier",
                    "--layerwise", layerwise_report, "--top-k", "1", "-o", "-")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    depths = json.loads(layerwise_report.read_text())["summary"]["layers"]
    deepest = max((r for r in depths if not r["unchanged"]), key=lambda r: r["shifted"]["depth"])
    assert doc["summary"]["stragglers"] == [deepest["layer"]]
    # a layerwise report of another pair is refused
    other = invoke("stragglers", pair.fine_tuned, pair.zero_shot, "--by", "barrier",
                   "--layerwise", layerwise_report)  # fmt: skip
    assert other.exit_code == 2 and "made on another" in other.stderr
    missing = invoke("stragglers", pair.zero_shot, pair.fine_tuned, "--by", "barrier")
    assert missing.exit_code == 2 and "needs --layerwise" in missing.stderr


def test_library_stragglers_by_barrier_writes_its_report(pair, layerwise_report, tmp_path):
    from clipsharp.analyses.stragglers import run_stragglers
    from clipsharp.core.workspace import Inputs
    from clipsharp.options import RunOptions, SharpnessOptions

    rule = StragglerOptions(layerwise=layerwise_report, by="barrier", top_k=1)
    inputs = Inputs({"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned}, ())
    output = tmp_path / "s.json"
    report = run_stragglers(inputs, RunOptions(), SharpnessOptions(), rule, output=output)
    assert json.loads(output.read_text()) == json.loads(report.to_json())
    depths = json.loads(layerwise_report.read_text())["summary"]["layers"]
    deepest = max((r for r in depths if not r["unchanged"]), key=lambda r: r["shifted"]["depth"])
    assert report.summary["stragglers"] == [deepest["layer"]]
    assert report.config["layerwise"] == str(layerwise_report)


@pytest.mark.parametrize("by", ["sharpness", "barrier"])
def test_library_stragglers_checks_its_output_before_reading_the_layerwise_report(
    pair, tmp_path, by
):
    """-o over the --layerwise file is refused as an input, before that file is read (it is
    no report: reading it first would fail with another error)."""
    from clipsharp.analyses.stragglers import run_stragglers
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.errors import ConfigError
    from clipsharp.options import RunOptions, SharpnessOptions

    other = tmp_path / "layers.json"
    other.write_text("not a report")
    rule = StragglerOptions(layerwise=other, by=by)
    specs = (DatasetSpec.parse(str(pair.shifted), "ood"),)
    inputs = Inputs({"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned}, specs)
    with pytest.raises(ConfigError, match="is also an input, the --layerwise report"):
        run_stragglers(inputs, RunOptions(), SharpnessOptions(), rule, output=other)
    assert other.read_text() == "not a report"


def test_prune_takes_the_stragglers_report(pair, tmp_path):
    report = tmp_path / "stragglers.json"
    result = invoke("stragglers", pair.fine_tuned, "--ood", pair.shifted, "--iterations", "2",
                    "--top-k", "1", "--device", "cpu", "-o", report)  # fmt: skip
    assert result.exit_code == 0, result.output
    chosen = json.loads(report.read_text())["summary"]["stragglers"]
    output = tmp_path / "pruned.safetensors"
    result = invoke("prune", pair.fine_tuned, "--from", report, "-o", output, "--report", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["layers"] == chosen

"""study: measures joined by checkpoint, correlations recomputed from the reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fine_tune_like, save_checkpoint
from safetensors.torch import load_file
from typer.testing import CliRunner

from clipsharp.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def average_ranks(values):
    values = np.asarray(values, dtype=float)
    ranks = np.empty(len(values))
    for v in np.unique(values):
        where = np.flatnonzero(values == v)
        ranks[where] = np.argsort(np.argsort(values))[where].mean()
    return ranks


@pytest.fixture(scope="module")
def reports(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    zs = load_file(str(pair.zero_shot))
    paths = []
    for i, scale in enumerate((0.05, 0.3, 0.8, 1.5)):
        ft = save_checkpoint(
            root / f"ft{i}.safetensors", fine_tune_like(zs, seed=10 + i, scale=scale)
        )
        common = [
            pair.zero_shot,
            ft,
            "--id",
            pair.in_dist,
            "--ood",
            pair.shifted,
            "--device",
            "cpu",
        ]
        paths.append(root / f"interpolate-{i}.json")
        invoke("interpolate", *common, "--alphas", "0:1:0.25", "-o", paths[-1])
        paths.append(root / f"sharpness-{i}.json")
        invoke("sharpness", *common, "--alphas", "0,1", "--iterations", "3", "--rho", "0.3",
               "-o", paths[-1])  # fmt: skip
    return paths


def test_correlations_recomputed_from_the_reports(reports):
    result = invoke("study", *reports, "-o", "-")
    doc = json.loads(result.stdout)
    assert doc["inputs"]["num_checkpoints"] == 4
    rows = doc["results"]["checkpoints"]
    gains, sharp = [], []
    for i in range(4):
        interpolate = json.loads(reports[2 * i].read_text())
        sharpness = json.loads(reports[2 * i + 1].read_text())
        row = next(
            r
            for r in rows
            if r["sha256"] == interpolate["inputs"]["checkpoints"]["fine_tuned"]["sha256"]
        )
        assert row["measures"]["gain[shifted]"] == interpolate["summary"]["shifted"]["gain"]
        assert (
            row["measures"]["sharpness@1[shifted]"]
            == sharpness["summary"]["shifted"][0]["fine_tuned"]
        )
        gains.append(row["measures"]["gain[shifted]"])
        sharp.append(row["measures"]["sharpness@1[shifted]"])
    rx, ry = average_ranks(sharp), average_ranks(gains)
    found = doc["summary"]["correlations"]["shifted"]["sharpness@1[shifted]"]
    if np.std(rx) and np.std(ry):
        assert found["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    else:
        assert found["spearman"] is None  # a constant ranks nothing
    assert found["checkpoints"] == 4
    assert "max_sharpness[in_dist]" in doc["summary"]["correlations"]["shifted"]
    assert "sharpness@1[shifted]" in result.stderr  # the table


def test_refuses_mixed_zero_shot_models_and_missing_gain(pair, reports, tmp_path):
    other = tmp_path / "other.json"
    invoke("interpolate", pair.fine_tuned, pair.zero_shot, "--ood", pair.shifted, "--alphas", "0,1",
           "--device", "cpu", "-o", other)  # fmt: skip
    mixed = runner.invoke(app, ["study", str(reports[0]), str(other)])
    assert mixed.exit_code == 2 and "different zero-shot checkpoints" in mixed.stderr
    lonely = runner.invoke(app, ["study", str(reports[1])])
    assert lonely.exit_code == 2 and "has no interpolate report" in lonely.stderr

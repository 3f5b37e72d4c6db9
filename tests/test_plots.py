"""Figures from reports made by the real commands: series counted on the figure objects."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clipsharp.cli import app
from clipsharp.plots import figures
from clipsharp.report import SCHEMA

runner = CliRunner()


def run(*args) -> dict:
    result = runner.invoke(app, [str(a) for a in args] + ["-o", "-"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pair_args(pair):
    return [pair.zero_shot, pair.fine_tuned, "--id", pair.in_dist, "--ood", pair.shifted,
            "--device", "cpu", "--alphas", "0,0.5,1"]  # fmt: skip


@pytest.fixture(scope="module")
def reports(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    docs = {
        "interpolate": run("interpolate", *pair_args(pair)),
        "layerwise": run("layerwise", *pair_args(pair), "--layers", "visual.*"),
    }
    docs["sharpness"] = run("sharpness", *pair_args(pair), "--iterations", "2", "--rho", "0.1,0.3")
    docs["stragglers"] = run("stragglers", pair.zero_shot, pair.fine_tuned, "--ood", pair.shifted,
                             "--iterations", "2", "--top-k", "1", "--device", "cpu")  # fmt: skip
    pruned = root / "pruned.safetensors"
    result = runner.invoke(app, [str(a) for a in ["prune", pair.fine_tuned, "--layers",
        "visual.block.0", "--zero-shot", pair.zero_shot, "--ood", pair.shifted, "--alphas",
        "0,0.5,1", "--device", "cpu", "-o", pruned, "--report", "-"]])  # fmt: skip
    assert result.exit_code == 0, result.output
    docs["prune"] = json.loads(result.stdout)
    paths = {}
    for name, doc in docs.items():
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    return docs, paths


def lines(ax) -> int:
    return len(ax.get_lines())


def test_interpolate_figure_has_a_series_per_dataset_and_overlays(reports):
    docs, _ = reports
    (fig,) = figures([docs["interpolate"]], ["a"])
    accuracy, loss = fig.axes
    assert lines(accuracy) == lines(loss) == 2  # in_dist and shifted
    assert "α" in accuracy.get_xlabel() and "accuracy" in accuracy.get_ylabel()
    assert [line.get_linestyle() for line in accuracy.get_lines()] == ["-", "--"]  # ID, OOD
    (overlay,) = figures([docs["interpolate"], docs["interpolate"]], ["a", "b"])
    assert lines(overlay.axes[0]) == 4
    assert len(overlay.axes[0].get_legend().get_texts()) == 4


def test_layerwise_heatmap_is_layers_by_alphas(reports):
    docs, _ = reports
    (fig,) = figures([docs["layerwise"]], ["l"])
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2  # one per dataset
    changed = [r for r in docs["layerwise"]["results"]["layers"] if not r["unchanged"]]
    image = panels[0].get_images()[0].get_array()
    assert image.shape == (len(changed), 3)
    first = changed[0]["path"][0]["metrics"]["shifted"]["accuracy"]
    assert image[0, 0] == pytest.approx(first)  # OOD panel first


def test_prune_figure_overlays_before_and_after(reports):
    docs, _ = reports
    (fig,) = figures([docs["prune"]], ["p"])
    assert lines(fig.axes[0]) == 2  # before and after, one dataset each


def test_sharpness_figure_has_error_bars_per_dataset_and_rho(reports):
    docs, _ = reports
    (fig,) = figures([docs["sharpness"]], ["s"])
    (ax,) = fig.axes
    assert len(ax.containers) == 4  # 2 datasets x 2 rhos, each an errorbar container
    first = ax.containers[0]
    y = first.lines[0].get_ydata()
    expected = [p["metrics"]["in_dist"]["sharpness"] for p in docs["sharpness"]["results"]["points"]
                if p["rho"] == 0.1]  # fmt: skip
    assert list(y) == pytest.approx(expected)
    assert first.has_yerr and "α" in ax.get_xlabel()


def test_stragglers_figure_marks_the_stragglers(reports):
    docs, _ = reports
    (fig,) = figures([docs["stragglers"]], ["t"])
    (ax,) = fig.axes
    bars = ax.patches
    layers = [r["layer"] for r in docs["stragglers"]["results"]["layers"]]
    assert len(bars) == len(layers) == 4
    red = [layer for layer, bar in zip(layers, bars, strict=True) if bar.get_facecolor()[0] > 0.7]
    assert red == docs["stragglers"]["summary"]["stragglers"]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_cli_writes_non_empty_files(reports, tmp_path, suffix):
    _, paths = reports
    output = tmp_path / f"figure{suffix}"
    result = runner.invoke(app, ["plot", str(paths["interpolate"]), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.stat().st_size > 1000


def test_several_kinds_need_a_pdf_with_one_page_each(reports, tmp_path):
    _, paths = reports
    reports_ = [str(paths[k]) for k in ("interpolate", "layerwise", "prune")]
    result = runner.invoke(app, ["plot", *reports_, "-o", str(tmp_path / "all.png")])
    assert result.exit_code == 2 and "write them to a .pdf" in result.stderr
    result = runner.invoke(app, ["plot", *reports_, "-o", str(tmp_path / "all.pdf")])
    assert result.exit_code == 0, result.output
    assert "3 figure(s)" in result.stderr
    assert b"/Count 3" in (tmp_path / "all.pdf").read_bytes()  # the page tree: 3 pages


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"schema": SCHEMA, "command": "inspect"}, "'inspect' report, which has no figure"),
        ({"schema": "clipsharp.report/9", "command": "interpolate"}, "clipsharp.report/9"),
    ],
)
def test_unplottable_reports_exit_2(tmp_path, doc, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    result = runner.invoke(app, ["plot", str(path), "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "f.png").exists()

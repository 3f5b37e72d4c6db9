"""Figures from reports made by the real commands: series counted on the figure objects."""

from __future__ import annotations

import copy
import json
import statistics

import pytest
from conftest import invoke, pair_args, succeeds

from clipsharp.reports.plot import alpha_ticks, figures, z_thresholds
from clipsharp.reports.report import SCHEMA


@pytest.fixture(scope="module")
def reports(pair, cli_report, tmp_path_factory):
    """Reports of every kind that has a figure, written by their commands: (docs, files)."""
    root = tmp_path_factory.mktemp("reports")
    alphas = ["--alphas", "0,0.5,1"]
    paths = {
        "interpolate": cli_report("interpolate", *pair_args(pair, *alphas))[0],
        "layerwise": cli_report("layerwise", *pair_args(pair, "--alphas", "0:1:0.05"),
                                "--layers", "visual.*", "--granularity", "module")[0],
        "sharpness": cli_report("sharpness", *pair_args(pair, *alphas, "--iterations", "2",
                                                        "--rho", "0.1,0.3"))[0],
        "stragglers": cli_report("stragglers", pair.zero_shot, pair.fine_tuned,
                                 "--ood", pair.shifted, "--iterations", "2", "--z", "0.5",
                                 "--device", "cpu")[0],
    }  # fmt: skip
    paths["prune"] = root / "prune.json"
    succeeds("prune", pair.fine_tuned, "--layers", "visual.block.0", "--zero-shot", pair.zero_shot,
             "--ood", pair.shifted, *alphas, "--device", "cpu", "-o", root / "pruned.safetensors",
             "--report", paths["prune"])  # fmt: skip
    docs = {name: json.loads(file.read_text()) for name, file in paths.items()}
    return docs, paths


def by_gid(ax, prefix: str) -> list:
    return [a for a in ax.get_children() if (a.get_gid() or "").startswith(prefix)]


def legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_interpolate_figure_marks_best_alpha_and_zero_shot_per_dataset(reports):
    doc = reports[0]["interpolate"]
    (fig,) = figures([doc], ["a"])
    accuracy, loss = fig.axes
    assert len(by_gid(accuracy, "path:")) == len(by_gid(loss, "path:")) == 2  # in_dist, shifted
    at_zero = doc["results"]["path"][0]
    assert at_zero["alpha"] == 0
    for name in ("in_dist", "shifted"):
        (best,) = by_gid(accuracy, f"best:{name}")
        summary = doc["summary"][name]
        assert list(best.get_xdata()) == [summary["best_alpha"]]
        assert list(best.get_ydata()) == [summary["best_accuracy"]]
        (baseline,) = by_gid(accuracy, f"zero-shot:{name}")
        assert baseline.get_linestyle() == "--"
        assert set(baseline.get_ydata()) == {at_zero["metrics"][name]["accuracy"]}
        (baseline,) = by_gid(loss, f"zero-shot:{name}")
        assert set(baseline.get_ydata()) == {at_zero["metrics"][name]["loss"]}
    texts = legend_texts(fig)
    assert {"in_dist (ID)", "shifted (OOD)", "zero-shot (α = 0)"} <= set(texts)
    assert not any("ft" in t.split() or t.startswith("ft") for t in texts)  # no file names
    assert "0 = zero-shot" in accuracy.get_xlabel() and "1 = fine-tuned" in loss.get_xlabel()


def test_overlaid_reports_keep_dataset_colours_and_differ_by_line_style(reports):
    doc = reports[0]["interpolate"]
    (fig,) = figures([doc, doc], ["a", "b"])
    accuracy = fig.axes[0]
    lines_ = by_gid(accuracy, "path:in_dist")
    assert len(lines_) == 2 and lines_[0].get_color() == lines_[1].get_color()
    assert lines_[0].get_linestyle() != lines_[1].get_linestyle()
    assert len(by_gid(accuracy, "zero-shot:in_dist")) == 1  # one zero-shot: drawn once
    assert {"ft (1)", "ft (2)"} <= set(legend_texts(fig))  # the same checkpoint name, numbered


def test_layerwise_heatmap_is_layers_by_alphas(reports):
    docs, _ = reports
    (fig,) = figures([docs["layerwise"]], ["l"])
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2  # one per dataset
    changed = [r for r in docs["layerwise"]["results"]["layers"] if not r["unchanged"]]
    image = panels[0].get_images()[0].get_array()
    assert image.shape == (len(changed), 21)
    first = changed[0]["path"][0]["metrics"]["shifted"]["accuracy"]
    assert image[0, 0] == pytest.approx(first)  # OOD panel first
    names = [t.get_text() for t in panels[0].get_yticklabels()]
    assert names == [r["layer"] for r in changed]  # module granularity, every layer named


def test_layerwise_alpha_ticks_are_few_and_do_not_overlap_at_21_alphas(reports):
    docs, _ = reports
    (fig,) = figures([docs["layerwise"]], ["l"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in (ax for ax in fig.axes if ax.get_images()):
        labels = ax.get_xticklabels()
        assert 2 <= len(labels) <= 6
        assert [t.get_text() for t in labels] == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
        ticks = {*ax.get_xticks(), *ax.get_xticks(minor=True)}
        assert ticks == set(range(21))  # a (minor) tick at every alpha measured


@pytest.mark.parametrize(
    ("count", "ticks"),
    [(3, [0, 1, 2]), (11, [0, 2, 4, 6, 8, 10]), (15, [0, 3, 6, 9, 12, 14]),
     (17, [0, 4, 8, 12, 16]), (101, [0, 20, 40, 60, 80, 100])],
)  # fmt: skip
def test_alpha_ticks_keep_both_ends(count, ticks):
    assert alpha_ticks(count) == ticks


def test_prune_figure_overlays_before_and_after(reports):
    docs, _ = reports
    (fig,) = figures([docs["prune"]], ["p"])
    assert len(by_gid(fig.axes[0], "path:")) == 2  # before and after, one dataset each
    assert {"before pruning", "pruned"} <= set(legend_texts(fig))


def test_sharpness_figure_has_error_bars_and_says_rho_and_draws(reports):
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
    title = ax.get_title()
    assert "ρ = 0.1, 0.3" in title and "2 draws" in title and "average-case" in title


def test_saturated_points_are_hollow_and_noted(reports):
    doc = copy.deepcopy(reports[0]["sharpness"])
    for point in doc["results"]["points"]:
        for metrics in point["metrics"].values():
            metrics["saturated"] = point["rho"] == 0.3
    (fig,) = figures([doc], ["s"])
    (ax,) = fig.axes
    hollow = by_gid(ax, "saturated")
    assert len(hollow) == 2  # the rho = 0.3 series of each dataset
    shown = sorted(y for line in hollow for y in line.get_ydata())
    expected = sorted(m["sharpness"] for p in doc["results"]["points"] if p["rho"] == 0.3
                      for m in p["metrics"].values())  # fmt: skip
    assert shown == pytest.approx(expected)
    assert all(line.get_markerfacecolor() == "white" for line in hollow)
    filled = [c.lines[0] for c in ax.containers]
    assert [line.get_markevery() for line in filled] == [[0, 1, 2], [], [0, 1, 2], []]
    assert any(t.startswith("saturated") for t in legend_texts(fig))
    for metrics in (m for p in doc["results"]["points"] for m in p["metrics"].values()):
        metrics["saturated"] = False
    (fig,) = figures([doc], ["s"])
    assert not by_gid(fig.axes[0], "saturated")
    assert not any(t.startswith("saturated") for t in legend_texts(fig))


def test_stragglers_figure_marks_the_stragglers_and_the_z_threshold(reports):
    doc = reports[0]["stragglers"]
    (fig,) = figures([doc], ["t"])
    (ax,) = fig.axes
    bars = ax.patches
    rows = doc["results"]["layers"]
    assert len(bars) == len(rows) == 4
    red = [r["layer"] for r, bar in zip(rows, bars, strict=True) if bar.get_facecolor()[0] > 0.7]
    assert red == doc["summary"]["stragglers"] == ["visual.embed"]
    title = ax.get_title()
    assert "ranked on shifted" in title and "ρ = 1" in title and "2 draws" in title
    values = [r["sharpness"] for r in rows]  # one tower: image
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    assert mad > 0
    (line,) = by_gid(ax, "z-threshold:image")
    ((start, y), (end, _)) = line.get_segments()[0]
    assert y == pytest.approx(median + 0.5 * 1.4826 * mad)
    assert (start, end) == pytest.approx((-0.45, 3.45))  # across the tower's bars
    assert any(t.startswith("z = 0.5 threshold") for t in legend_texts(fig))


def test_no_z_line_when_stragglers_are_the_top_k(reports):
    doc = copy.deepcopy(reports[0]["stragglers"])
    doc["config"]["top_k"] = 1
    (fig,) = figures([doc], ["t"])
    assert not by_gid(fig.axes[0], "z-threshold")


def test_z_thresholds_invert_the_reports_z():
    rows = [{"tower": "image", "v": v, "z": (v - 2.0) / 4.0} for v in (0.0, 2.0, 10.0)]
    rows += [{"tower": "text", "v": 1.0, "z": 0.0}, {"tower": "text", "v": 1.0, "z": 0.0}]
    assert z_thresholds(rows, "v", 3.5) == {"image": pytest.approx(2.0 + 3.5 * 4.0)}


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_cli_writes_non_empty_files(reports, tmp_path, suffix):
    _, paths = reports
    output = tmp_path / f"figure{suffix}"
    result = invoke("plot", paths["interpolate"], "-o", output)
    assert result.exit_code == 0, result.output
    assert output.stat().st_size > 1000
    assert f"interpolate figure written to {output}" in result.stderr


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_several_figures_go_to_numbered_files(reports, tmp_path, suffix):
    _, paths = reports
    reports_ = [str(paths[k]) for k in ("interpolate", "layerwise", "prune")]
    result = invoke("plot", *reports_, "-o", tmp_path / f"all{suffix}")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"all-{i}{suffix}" for i in (1, 2, 3)]
    for i, kind in enumerate(("interpolate", "layerwise", "prune"), start=1):
        assert f"{kind} figure written to {tmp_path / f'all-{i}{suffix}'}" in result.stderr


def test_several_figures_to_a_pdf_keep_one_page_each(reports, tmp_path):
    _, paths = reports
    reports_ = [str(paths[k]) for k in ("interpolate", "layerwise", "prune")]
    result = invoke("plot", *reports_, "-o", tmp_path / "all.pdf")
    assert result.exit_code == 0, result.output
    assert "3 figures written to" in result.stderr
    assert b"/Count 3" in (tmp_path / "all.pdf").read_bytes()  # the page tree: 3 pages
    assert [p.name for p in tmp_path.iterdir()] == ["all.pdf"]


def test_a_numbered_file_that_is_an_input_is_refused(reports, tmp_path):
    _, paths = reports
    report = tmp_path / "fig-2.png"  # a report under a figure's name
    report.write_bytes(paths["layerwise"].read_bytes())
    before = report.read_bytes()
    result = invoke("plot", paths["interpolate"], report, "-o", tmp_path / "fig.png")
    assert result.exit_code == 2
    assert "fig-2.png is also an input" in result.stderr
    assert report.read_bytes() == before and not (tmp_path / "fig-1.png").exists()


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
    result = invoke("plot", path, "-o", tmp_path / "f.png")
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "f.png").exists()

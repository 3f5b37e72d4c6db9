"""The paper's figures from clipsharp reports, with matplotlib (Agg: no display needed).

One figure function per report kind, chosen from the report's ``command``:
interpolate (Fig. 1), layerwise (Fig. 2), sharpness (Fig. 3), stragglers
(Fig. 4), prune (Fig. 5), study (a scatter per measure against the OOD gain).
Reports of the same kind that can share axes are overlaid. Legends name datasets
by their report name; overlaid reports are told apart by line style, each named
by its fine-tuned checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from ..errors import ReportError
from ..files import write_atomic
from ..printable import printable, printable_strings

ALPHA_LABEL = "α  (0 = zero-shot, 1 = fine-tuned)"
FORMATS = (".png", ".svg", ".pdf")
REPORT_STYLES = [("-", "o"), ("-.", "s"), (":", "^"), ((0, (5, 1, 1, 1)), "D")]  # "--": baseline
BASELINE = {"linestyle": "--", "linewidth": 1.0, "alpha": 0.8}  # the zero-shot value (α = 0)
BEST = {"marker": "*", "markersize": 14, "markeredgecolor": "black", "linestyle": "none"}
SATURATED = {
    "marker": "o",
    "markersize": 7,
    "markerfacecolor": "white",
    "color": "grey",
    "markeredgecolor": "grey",
    "linestyle": "none",
}
MAX_ALPHA_TICKS = 6  # labelled α of a heatmap: 0, 0.2, ..., 1 for 11 or 21 alphas
ROW_INCHES = 0.22  # height of one layer's row in the heatmap
MAX_LABELLED_ROWS = 72  # more layers than this: every k-th layer named, the figure capped


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_of(doc: dict) -> str:
    """The name a report goes by among overlaid ones: its fine-tuned (or only) checkpoint file."""
    checkpoints = doc.get("inputs", {}).get("checkpoints", {})
    chosen = checkpoints.get("fine_tuned") or checkpoints.get("model") or {}
    return Path(chosen.get("path", doc.get("command", "report"))).stem


def _labels(docs: Sequence[dict]) -> list[str]:
    """``label_of`` each report, numbered where two would read the same."""
    stems = [label_of(d) for d in docs]
    return [f"{s} ({i + 1})" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def _datasets(doc: dict) -> list[dict]:
    return doc.get("inputs", {}).get("datasets", [])


def _tag(d: dict) -> str:
    return f"{d['name']} ({d['role'].upper()})"


def _number(value: Any) -> float:
    """A report number as a float; null (not finite when written) as NaN, a gap in the line."""
    return math.nan if value is None else float(value)


def _line(style: dict | None = None, **kwargs: Any):
    """A legend entry that is no artist of the axes."""
    from matplotlib.lines import Line2D

    return Line2D([], [], **(style or {}), **kwargs)


def _colours() -> list[str]:
    return _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]


# --- Fig. 1 and 5: accuracy and loss along the path ---------------------------------


def _path_series(axes, path: list[dict], datasets: list[dict], summary: dict, style: dict) -> None:
    """One report's path: a line per dataset, its best α (★) and zero-shot value (dashed)."""
    alphas = [p["alpha"] for p in path]
    at_zero = next((p for p in path if p["alpha"] == 0), None)
    for d in datasets:
        name, colour = d["name"], style["colours"][d["name"]]
        line = {"linestyle": style["linestyle"], "marker": style["marker"], "markersize": 3}
        for ax, field in zip(axes, ("accuracy", "loss"), strict=True):
            values = [_number(p["metrics"][name][field]) for p in path]
            ax.plot(alphas, values, color=colour, gid=f"path:{name}", **line)
            if at_zero is not None and at_zero["metrics"][name][field] is not None:
                y = at_zero["metrics"][name][field]
                if (name, y) not in style["baselines"].setdefault(field, set()):
                    style["baselines"][field].add((name, y))
                    ax.axhline(y, color=colour, gid=f"zero-shot:{name}", **BASELINE)
        best = summary.get(name) or {}
        if best.get("best_alpha") is not None and best.get("best_accuracy") is not None:
            axes[0].plot(
                [best["best_alpha"]],
                [best["best_accuracy"]],
                color=colour,
                gid=f"best:{name}",
                zorder=4,
                **BEST,
            )


def _path_figure(title: str, series: Sequence[tuple[str, list[dict], list[dict], dict]]):
    """``series``: (label, path, datasets, summary) of each report, overlaid."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
    names = list(dict.fromkeys(d["name"] for _, _, datasets, _ in series for d in datasets))
    colours = {name: _colours()[i % len(_colours())] for i, name in enumerate(names)}
    baselines: dict[str, set] = {}
    for i, (_, path, datasets, summary) in enumerate(series):
        linestyle, marker = REPORT_STYLES[i % len(REPORT_STYLES)]
        style = {
            "linestyle": linestyle,
            "marker": marker,
            "colours": colours,
            "baselines": baselines,
        }
        _path_series(axes, path, datasets, summary, style)
    axes[0].set_ylabel("accuracy (fraction correct)")
    axes[1].set_ylabel("loss (mean cross-entropy, nats)")
    for ax in axes:
        ax.set_xlabel(ALPHA_LABEL)
        ax.grid(alpha=0.3)
    roles = {d["name"]: d for _, _, datasets, _ in series for d in datasets}
    handles = [_line(color=colours[n], marker="o", label=_tag(roles[n])) for n in names]
    if len(series) > 1:  # reports by line style
        handles += [
            _line(
                color="black",
                linestyle=REPORT_STYLES[i % len(REPORT_STYLES)][0],
                marker=REPORT_STYLES[i % len(REPORT_STYLES)][1],
                markersize=4,
                label=label,
            )
            for i, (label, *_) in enumerate(series)
        ]
    best = BEST | {"markersize": 10}
    handles += [
        _line(BASELINE, color="grey", label="zero-shot (α = 0)"),
        _line(best, color="grey", label="best α (accuracy)"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 4),
        fontsize="small",
        frameon=False,
    )
    fig.suptitle(title)
    return fig


def interpolate_figure(docs: Sequence[dict]):
    """Fig. 1: accuracy and loss along the interpolation path, best α and zero-shot marked."""
    series = [
        (label, d["results"]["path"], _datasets(d), d.get("summary", {}))
        for label, d in zip(_labels(docs), docs, strict=True)
    ]
    return _path_figure("Interpolation path (WiSE-FT)", series)


def prune_figure(docs: Sequence[dict]):
    """Fig. 5: the path before and after pruning, overlaid."""
    series = []
    for label, doc in zip(_labels(docs), docs, strict=True):
        if "before" not in doc["results"]:
            raise ReportError(
                f"prune report of {label_of(doc)} has no before/after paths; "
                "run prune with --zero-shot and --id/--ood"
            )
        summary = doc.get("summary", {})
        for when, tag in (("before", "before pruning"), ("after", "pruned")):
            name = tag if len(docs) == 1 else f"{label} {tag}"
            series.append((name, doc["results"][when], _datasets(doc), summary.get(when) or {}))
    return _path_figure("Interpolation path before and after pruning", series)


# --- Fig. 2: layer x alpha heatmap --------------------------------------------------


def alpha_ticks(count: int) -> list[int]:
    """Indices of at most MAX_ALPHA_TICKS of ``count`` alphas to label, evenly spaced,
    the first and the last included (0 and 1 on a 0:1 sweep)."""
    if count <= MAX_ALPHA_TICKS:
        return list(range(count))
    step = math.ceil((count - 1) / (MAX_ALPHA_TICKS - 1))
    ticks = list(range(0, count, step))
    if ticks[-1] != count - 1:
        ticks.append(count - 1)
        if ticks[-1] - ticks[-2] < step / 2:  # too close to read apart: the last wins
            del ticks[-2]
    return ticks


def _heatmap_size(rows: list[dict], panels: int) -> tuple[float, float, int]:
    """(width, height) in inches and the step between named rows."""
    step = math.ceil(len(rows) / MAX_LABELLED_ROWS)
    height = 1.6 + ROW_INCHES * min(len(rows), MAX_LABELLED_ROWS)
    names = 0.065 * max(len(r["layer"]) for r in rows)  # inches of the longest layer name
    return 0.6 + names + 3.6 * panels, max(height, 3.0), step


def layerwise_figure(doc: dict):
    """Fig. 2: a layer x alpha heatmap of accuracy, one panel per dataset (OOD first).

    A heatmap, not a line per layer: the paper's Figure 2 asks which layers, moved
    alone, change accuracy and at what α; rows scale to module granularity (a
    hundred layers) and columns to fine α sweeps, where lines would be a tangle.
    Layers are named once, on the left; α labels are thinned to a readable few
    (with a minor tick at every α measured), since 21 labels of 4 characters do
    not fit a 3-inch panel.
    """
    plt = _pyplot()
    rows = [r for r in doc["results"]["layers"] if not r["unchanged"]]
    if not rows:
        raise ReportError(f"layerwise report of {label_of(doc)} has no changed layer to plot")
    datasets = sorted(_datasets(doc), key=lambda d: d["role"] != "ood")
    alphas = [p["alpha"] for p in rows[0]["path"]]
    width, height, step = _heatmap_size(rows, len(datasets))
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(width, height), sharey=True, layout="constrained", squeeze=False
    )
    ticks = alpha_ticks(len(alphas))
    for ax, d in zip(axes[0], datasets, strict=True):
        grid = [[_number(p["metrics"][d["name"]]["accuracy"]) for p in r["path"]] for r in rows]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xticks(ticks, [f"{alphas[i]:g}" for i in ticks])
        ax.set_xticks(range(len(alphas)), minor=True)
        ax.set_xlabel("α of the moved layer\n(0 = zero-shot, 1 = fine-tuned)")
        ax.set_title(f"{_tag(d)} accuracy", fontsize="medium")
        for i in range(1, len(rows)):  # a white rule between towers
            if rows[i].get("tower") != rows[i - 1].get("tower"):
                ax.axhline(i - 0.5, color="white", linewidth=1.5)
        fig.colorbar(image, ax=ax, label="accuracy", fraction=0.08, pad=0.02)
    named = range(0, len(rows), step)
    axes[0][0].set_yticks(list(named), [rows[i]["layer"] for i in named], fontsize="small")
    background = doc["config"].get("background", "ft")
    others = "fine-tuned" if background == "ft" else "zero-shot"
    fig.suptitle(
        f"Layer-wise interpolation of {label_of(doc)}: one layer moved, the others {others}"
    )
    return fig


# --- Fig. 3: sharpness --------------------------------------------------------------


def _sharpness_points(doc: dict) -> list[dict]:
    return doc["results"]["points"]


def _sharpness_title(docs: Sequence[dict], along_path: bool) -> str:
    """What was measured: kind, ρ and draws (gradient-ascent steps for the worst case)."""
    kinds = sorted({d["config"].get("kind", "average") for d in docs})
    rhos = sorted({p["rho"] for d in docs for p in _sharpness_points(d)})
    iterations = sorted({d["config"]["iterations"] for d in docs if "iterations" in d["config"]})
    counted = "ascent steps" if kinds == ["worst"] else "draws"
    where = " along the interpolation path" if along_path else ""
    detail = [f"{'/'.join(kinds)}-case", "ρ = " + ", ".join(f"{r:g}" for r in rhos)]
    if iterations:
        detail.append(f"{' or '.join(str(i) for i in iterations)} {counted} per point")
    return f"Sharpness{where}\n" + "; ".join(detail)


def _sharpness_series(ax, x: list[float], metrics: list[dict], tag: str) -> bool:
    """One series with error bars; saturated points hollow and grey. True if any is."""
    y = [_number(m["sharpness"]) for m in metrics]
    bars = ax.errorbar(
        x,
        y,
        yerr=[_number(m["stderr"]) for m in metrics],
        marker="o",
        markersize=4,
        capsize=3,
        label=tag,
    )
    saturated = [i for i, m in enumerate(metrics) if m.get("saturated")]
    bars.lines[0].set_markevery([i for i in range(len(y)) if i not in saturated])
    if saturated:
        ax.plot(
            [x[i] for i in saturated],
            [y[i] for i in saturated],
            gid="saturated",
            zorder=3,
            **SATURATED,
        )
    return bool(saturated)


def sharpness_figure(docs: Sequence[dict]):
    """Fig. 3: sharpness along the path (or against rho for one model), with stderr bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    along_path = any(p.get("alpha") is not None for d in docs for p in _sharpness_points(d))
    any_saturated = False
    for label, doc in zip(_labels(docs), docs, strict=True):
        rhos = sorted({p["rho"] for p in _sharpness_points(doc)})
        for d in _datasets(doc):
            for rho in rhos if along_path else rhos[:1]:  # along ρ: one series per dataset
                points = [p for p in _sharpness_points(doc) if p["rho"] == rho or not along_path]
                x = [p["alpha"] if along_path else p["rho"] for p in points]
                tag = _tag(d) if len(docs) == 1 else f"{label}: {_tag(d)}"
                tag += f", ρ = {rho:g}" if along_path and len(rhos) > 1 else ""
                metrics = [p["metrics"][d["name"]] for p in points]
                any_saturated |= _sharpness_series(ax, x, metrics, tag)
    ax.set_xlabel(ALPHA_LABEL if along_path else "ρ (relative perturbation radius)")
    if not along_path:
        ax.set_xscale("log")
    kind = docs[0]["config"].get("kind", "average")
    ax.set_ylabel(f"adaptive {kind}-case sharpness (Δ loss, nats)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if any_saturated:
        handles.append(
            _line(
                SATURATED,
                label="saturated: perturbed model at chance\n(ρ too large to tell models apart)",
            )
        )
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(_sharpness_title(docs, along_path), fontsize="medium")
    return fig


# --- Fig. 4: stragglers -------------------------------------------------------------


def z_thresholds(rows: list[dict], value: str, z: float) -> dict[str, float]:
    """Per tower, the value whose robust z-score is ``z`` (the straggler threshold).

    The report's z is affine in the value within a tower, z = (v - median) / scale,
    so two layers with different z give median and scale. A tower whose z are all
    equal (scale 0: every z is 0) has no threshold.
    """
    found = {}
    for tower in dict.fromkeys(r.get("tower") for r in rows):
        members = [r for r in rows if r.get("tower") == tower]
        known = [(r[value], r["z"]) for r in members if None not in (r.get("z"), r[value])]
        if len(known) < 2:
            continue
        (v0, z0), (v1, z1) = min(known, key=lambda k: k[1]), max(known, key=lambda k: k[1])
        if z1 > z0:
            scale = (v1 - v0) / (z1 - z0)
            found[tower] = v0 + (z - z0) * scale
    return found


def _threshold_lines(ax, rows: list[dict], value: str, z: float) -> list:
    """A dashed line at each tower's threshold, across that tower's bars."""
    thresholds = z_thresholds(rows, value, z)
    handles, start = [], 0
    for tower, members in groupby(rows, key=lambda r: r.get("tower")):
        count = len(list(members))
        if tower in thresholds:
            handles = [
                ax.hlines(
                    thresholds[tower],
                    start - 0.45,
                    start + count - 0.55,
                    colors="tab:red",
                    linestyles="--",
                    gid=f"z-threshold:{tower}",
                    label=f"z = {z:g} threshold (per tower)",
                )
            ]
        start += count
    return handles


def _stragglers_title(doc: dict, value: str) -> str:
    config, summary = doc.get("config", {}), doc["summary"]
    what = [f"ranked on {summary['rank_on']}"] if summary.get("rank_on") else []
    if value == "sharpness":
        rho = config.get("rho", (config.get("rhos") or [None])[0])
        what += [f"ρ = {rho:g}"] if rho is not None else []
        what += [f"{config['iterations']} draws"] if "iterations" in config else []
    elif config.get("layerwise"):
        what.append(f"depth from {Path(config['layerwise']).name}")
    rule = summary.get("rule", "")
    return f"Straggler layers of {label_of(doc)}: {', '.join(what)}\n{rule}"


def stragglers_figure(doc: dict):
    """Fig. 4: per-layer sharpness (fine-tuned and zero-shot), stragglers marked, the
    z threshold drawn when the rule is robust z (no ``top_k``)."""
    plt = _pyplot()
    rows = doc["results"]["layers"]
    stragglers = set(_straggler_names(doc))
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(rows) + 3), 4.5), layout="constrained")
    x = list(range(len(rows)))
    colours = ["tab:red" if r["layer"] in stragglers else "tab:blue" for r in rows]
    value = "sharpness" if "sharpness" in rows[0] else "depth"
    errors = [_number(r.get("stderr")) if r.get("stderr") is not None else 0 for r in rows]
    ax.bar(
        x,
        [_number(r[value]) for r in rows],
        yerr=errors,
        color=colours,
        capsize=2,
        error_kw={"ecolor": "0.4"},
    )
    measured = "fine-tuned" if value == "sharpness" else "layer"
    handles = [
        _line(color="tab:blue", marker="s", linestyle="none", label=measured),
        _line(color="tab:red", marker="s", linestyle="none", label="straggler"),
    ]
    reference = [r.get("zero_shot_sharpness") for r in rows]
    if any(v is not None for v in reference):
        handles += ax.plot(
            x,
            [_number(v) for v in reference],
            "k_",
            markersize=24,
            markeredgewidth=2.5,
            label="zero-shot",
        )
    config = doc.get("config", {})
    if config.get("top_k") is None and config.get("z") is not None:
        handles += _threshold_lines(ax, rows, value, config["z"])
    ax.set_xticks(x, [r["layer"] for r in rows], rotation=60, ha="right", fontsize="small")
    for label, colour in zip(ax.get_xticklabels(), colours, strict=True):
        if colour == "tab:red":
            label.set_color("tab:red")
            label.set_fontweight("bold")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("layer-wise sharpness (Δ loss, nats)" if value == "sharpness" else "layer depth")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(_stragglers_title(doc, value), fontsize="medium")
    return fig


def _straggler_names(doc: dict) -> list[str]:
    return [s["layer"] if isinstance(s, dict) else s for s in doc["summary"].get("stragglers", [])]


def _study_title(measure: str, found: dict) -> str:
    if found["spearman"] is None:
        return f"{measure}\nρ: none ({found.get('reason') or 'no value'})"
    interval = found.get("interval")
    shown = f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else ""
    return f"{measure}\nρ = {found['spearman']:+.2f}{shown}"


def study_figure(doc: dict):
    """A grid of scatters: each measure against the OOD gain, a point per fine-tuned model
    (labelled by name), ρ and its bootstrap interval in the title; per OOD set, the
    measures ranked by |ρ| as in the study's table."""
    plt = _pyplot()
    rows = doc["results"]["checkpoints"]
    panels = [
        (ood, m, found[m])
        for ood, found in doc["summary"]["correlations"].items()
        for m in doc["summary"].get("ranking", {}).get(ood, sorted(found))
    ]
    columns = max(1, min(4, len(panels)))
    lines = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(3.4 * columns, 3.0 * lines), squeeze=False)
    for ax, (ood, measure, found) in zip(axes.flat, panels, strict=False):
        target = f"gain[{ood}]"
        shown = [r for r in rows if measure in r["measures"] and target in r["measures"]]
        x = [_number(r["measures"][measure]) for r in shown]
        y = [_number(r["measures"][target]) for r in shown]
        ax.scatter(x, y, gid=f"scatter:{ood}:{measure}")
        for r, xi, yi in zip(shown, x, y, strict=True):
            name = r.get("name") or Path(r["fine_tuned"]).stem
            ax.annotate(
                name,
                (xi, yi),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
                gid=f"model:{name}",
            )
        ax.set_title(_study_title(measure, found), fontsize=8)
        ax.set_xlabel(measure, fontsize=7)
        ax.set_ylabel(f"OOD gain ({ood})", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"study: {doc['inputs']['num_checkpoints']} fine-tuned checkpoints")
    fig.tight_layout()
    return fig


# --- several reports, several figures, files ------------------------------------------

# command -> (figure function, whether several reports share one figure)
FIGURES: dict[str, tuple[Callable, bool]] = {
    "interpolate": (interpolate_figure, True),
    "prune": (prune_figure, True),
    "sharpness": (sharpness_figure, True),
    "layerwise": (layerwise_figure, False),
    "stragglers": (stragglers_figure, False),
    "study": (study_figure, False),
}


def figure_groups(docs: Sequence[dict], names: Sequence[str]) -> list[list[dict]]:
    """The reports of each figure: consecutive overlayable reports of one kind share one."""
    for doc, name in zip(docs, names, strict=True):
        if doc.get("command") not in FIGURES:
            raise ReportError(
                f"{name} is a {doc.get('command')!r} report, which has no figure; "
                f"plot one of: {', '.join(FIGURES)}"
            )
    groups: list[list[dict]] = []
    for doc in docs:
        overlay = FIGURES[doc["command"]][1]
        if overlay and groups and groups[-1][0]["command"] == doc["command"]:
            groups[-1].append(doc)
        else:
            groups.append([doc])
    return groups


def figures(docs: Sequence[dict], names: Sequence[str]) -> list[Any]:
    """One matplotlib figure per group of :func:`figure_groups`; the reports' names are drawn
    :func:`~clipsharp.printable.printable`."""
    docs, names = [printable_strings(doc) for doc in docs], [printable(n) for n in names]
    result = []
    try:
        for group in figure_groups(docs, names):
            make, overlay = FIGURES[group[0]["command"]]
            result.append(make(group) if overlay else make(group[0]))
    except BaseException:
        for fig in result:
            _pyplot().close(fig)
        raise
    return result


def figure_paths(output: Path, count: int) -> list[Path]:
    """Where ``count`` figures go: ``output`` for one figure or a PDF (a page each), else
    one file per figure, numbered from 1 before the suffix.

    Example:
        >>> figure_paths(Path("fig.png"), 2)
        [PosixPath('fig-1.png'), PosixPath('fig-2.png')]
    """
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ReportError(f"-o {output}: choose a .png, .svg or .pdf file")
    if count == 1 or suffix == ".pdf":
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


def save_figures(figs: Sequence[Any], output: Path) -> list[Path]:
    """Write the figures to ``output``: one PNG / SVG per figure (numbered as
    :func:`figure_paths` says when there are several), or one PDF, a page each.

    Each file is written atomically; if one fails, those already written are removed.
    The figures are closed afterwards. Returns the files written.
    """
    paths = figure_paths(Path(output), len(figs))
    written: list[Path] = []
    try:
        if paths[0].suffix.lower() == ".pdf":
            write_atomic(paths[0], lambda tmp: _pdf(figs, tmp))
        else:
            for fig, path in zip(figs, paths, strict=True):
                kind = path.suffix.lower()[1:]
                write_atomic(path, lambda tmp, f=fig, k=kind: f.savefig(tmp, format=k, dpi=150))
                written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        for fig in figs:  # pyplot keeps every figure alive until it is closed
            _pyplot().close(fig)
    return paths


def _pdf(figs: Sequence[Any], tmp: Path) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(tmp) as pages:
        for fig in figs:
            pages.savefig(fig)

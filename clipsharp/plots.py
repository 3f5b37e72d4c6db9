"""The paper's figures from clipsharp reports, with matplotlib (Agg: no display needed).

One figure function per report kind, chosen from the report's ``command``:
interpolate (Fig. 1), layerwise (Fig. 2), sharpness (Fig. 3), stragglers
(Fig. 4), prune (Fig. 5). Reports of the same kind that can share axes are
overlaid, each labelled with its fine-tuned checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ReportError
from .files import write_atomic

ALPHA_LABEL = "α  (0 = zero-shot, 1 = fine-tuned)"
FORMATS = (".png", ".svg", ".pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_of(doc: dict) -> str:
    """The name a report goes by in a legend: its fine-tuned (or only) checkpoint file."""
    checkpoints = doc.get("inputs", {}).get("checkpoints", {})
    chosen = checkpoints.get("fine_tuned") or checkpoints.get("model") or {}
    return Path(chosen.get("path", doc.get("command", "report"))).stem


def _datasets(doc: dict) -> list[dict]:
    return doc.get("inputs", {}).get("datasets", [])


def _path_axes(axes, path: list[dict], datasets: list[dict], label: str, style: dict) -> None:
    """Accuracy (left) and loss (right) against alpha: solid ID, dashed OOD."""
    alphas = [p["alpha"] for p in path]
    for d in datasets:
        name = d["name"]
        line = {"linestyle": "-" if d["role"] == "id" else "--", "marker": "o", "markersize": 3}
        tag = f"{label}: {name} ({d['role'].upper()})"
        axes[0].plot(
            alphas, [p["metrics"][name]["accuracy"] for p in path], label=tag, **line, **style
        )
        axes[1].plot(alphas, [p["metrics"][name]["loss"] for p in path], label=tag, **line, **style)


def _path_figure(title: str, series: Sequence[tuple[str, list[dict], list[dict]]]):
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, path, datasets) in enumerate(series):
        _path_axes(axes, path, datasets, label, {"color": colors[i % len(colors)]})
    axes[0].set_ylabel("accuracy (fraction correct)")
    axes[1].set_ylabel("loss (mean cross-entropy, nats)")
    for ax in axes:
        ax.set_xlabel(ALPHA_LABEL)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return fig


def interpolate_figure(docs: Sequence[dict]):
    """Fig. 1: accuracy and loss along the interpolation path, one colour per report."""
    series = [(label_of(d), d["results"]["path"], _datasets(d)) for d in docs]
    return _path_figure("Interpolation path (WiSE-FT)", series)


def prune_figure(docs: Sequence[dict]):
    """Fig. 5: the path before and after pruning, overlaid."""
    series = []
    for doc in docs:
        if "before" not in doc["results"]:
            raise ReportError(
                f"prune report of {label_of(doc)} has no before/after paths; "
                "run prune with --zero-shot and --id/--ood"
            )
        series.append((f"{label_of(doc)} before", doc["results"]["before"], _datasets(doc)))
        series.append((f"{label_of(doc)} pruned", doc["results"]["after"], _datasets(doc)))
    return _path_figure("Interpolation path before and after pruning", series)


def layerwise_figure(doc: dict):
    """Fig. 2: a layer x alpha heatmap of accuracy, one panel per dataset (OOD first)."""
    plt = _pyplot()
    rows = [r for r in doc["results"]["layers"] if not r["unchanged"]]
    if not rows:
        raise ReportError(f"layerwise report of {label_of(doc)} has no changed layer to plot")
    datasets = sorted(_datasets(doc), key=lambda d: d["role"] != "ood")
    alphas = [p["alpha"] for p in rows[0]["path"]]
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(4 + 3 * len(datasets), 1 + 0.3 * len(rows)),
        constrained_layout=True, squeeze=False,
    )  # fmt: skip
    for ax, d in zip(axes[0], datasets, strict=True):
        grid = [[p["metrics"][d["name"]]["accuracy"] for p in r["path"]] for r in rows]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas], fontsize="small")
        ax.set_yticks(range(len(rows)), [r["layer"] for r in rows], fontsize="small")
        ax.set_xlabel("α of the moving layer (0 = zero-shot)")
        ax.set_title(f"{d['name']} ({d['role'].upper()}) accuracy")
        fig.colorbar(image, ax=ax, label="accuracy")
    background = doc["config"].get("background", "ft")
    fig.suptitle(f"Layer-wise interpolation of {label_of(doc)} (background: {background})")
    return fig


def _sharpness_points(doc: dict) -> list[dict]:
    return doc["results"]["points"]


def sharpness_figure(docs: Sequence[dict]):
    """Fig. 3: sharpness along the path (or against rho for one model), with stderr bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    along_path = any(p.get("alpha") is not None for d in docs for p in _sharpness_points(d))
    for doc in docs:
        for d in _datasets(doc):
            for rho in sorted({p["rho"] for p in _sharpness_points(doc)}):
                points = [p for p in _sharpness_points(doc) if p["rho"] == rho]
                x = [p["alpha"] if along_path else p["rho"] for p in points]
                m = [p["metrics"][d["name"]] for p in points]
                tag = f"{label_of(doc)}: {d['name']} ({d['role'].upper()})"
                if along_path and len({p["rho"] for p in _sharpness_points(doc)}) > 1:
                    tag += f", ρ={rho:g}"
                ax.errorbar(x, [v["sharpness"] for v in m], yerr=[v["stderr"] for v in m],
                            marker="o", markersize=3, capsize=3, label=tag)  # fmt: skip
                if not along_path:
                    break  # one series per dataset, x = rho
    ax.set_xlabel(ALPHA_LABEL if along_path else "ρ (relative perturbation radius)")
    if not along_path:
        ax.set_xscale("log")
    kind = docs[0]["config"].get("kind", "average")
    ax.set_ylabel(f"adaptive {kind}-case sharpness (Δ loss, nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Sharpness" + (" along the interpolation path" if along_path else ""))
    return fig


def stragglers_figure(doc: dict):
    """Fig. 4: per-layer sharpness (fine-tuned and zero-shot), stragglers marked."""
    plt = _pyplot()
    rows = doc["results"]["layers"]
    stragglers = set(_straggler_names(doc))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4), constrained_layout=True)
    x = list(range(len(rows)))
    colors = ["tab:red" if r["layer"] in stragglers else "tab:blue" for r in rows]
    from matplotlib.patches import Patch

    value = "sharpness" if "sharpness" in rows[0] else "depth"
    ax.bar(x, [r[value] for r in rows], yerr=[r.get("stderr") or 0 for r in rows],
           color=colors, capsize=2)  # fmt: skip
    handles = [
        Patch(color="tab:blue", label="fine-tuned"),
        Patch(color="tab:red", label="straggler"),
    ]
    reference = [r.get("zero_shot_sharpness") for r in rows]
    if any(v is not None for v in reference):
        handles += ax.plot(x, reference, "k_", markersize=12, label="zero-shot")
    ax.set_xticks(x, [r["layer"] for r in rows], rotation=60, ha="right", fontsize="small")
    ax.set_ylabel("layer-wise sharpness (Δ loss, nats)" if value == "sharpness" else "layer depth")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(handles=handles, fontsize="small")
    ax.set_title(
        f"Straggler layers of {label_of(doc)}\n{doc['summary'].get('rule', '')}", fontsize=10
    )
    return fig


def _straggler_names(doc: dict) -> list[str]:
    return [s["layer"] if isinstance(s, dict) else s for s in doc["summary"].get("stragglers", [])]


# command -> (figure function, whether several reports share one figure)
FIGURES: dict[str, tuple[Callable, bool]] = {
    "interpolate": (interpolate_figure, True),
    "prune": (prune_figure, True),
    "sharpness": (sharpness_figure, True),
    "layerwise": (layerwise_figure, False),
    "stragglers": (stragglers_figure, False),
}


def figures(docs: Sequence[dict], names: Sequence[str]) -> list[Any]:
    """One figure per group: consecutive overlayable reports of one kind share a figure."""
    for doc, name in zip(docs, names, strict=True):
        if doc.get("command") not in FIGURES:
            raise ReportError(
                f"{name} is a {doc.get('command')!r} report, which has no figure; "
                f"plot one of: {', '.join(FIGURES)}"
            )
    result, i = [], 0
    while i < len(docs):
        make, overlay = FIGURES[docs[i]["command"]]
        j = i + 1
        while overlay and j < len(docs) and docs[j]["command"] == docs[i]["command"]:
            j += 1
        result.append(make(docs[i:j]) if overlay else make(docs[i]))
        i = j
    return result


def save_figures(figs: Sequence[Any], output: Path) -> None:
    """PNG / SVG for one figure, PDF for any number (one page each); written atomically.

    The figures are closed afterwards.
    """
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ReportError(f"-o {output}: choose a .png, .svg or .pdf file")
    if len(figs) > 1 and suffix != ".pdf":
        raise ReportError(
            f"these reports make {len(figs)} figures; write them to a .pdf (one page each)"
        )

    def write(tmp: Path) -> None:
        if suffix == ".pdf":
            from matplotlib.backends.backend_pdf import PdfPages

            with PdfPages(tmp) as pages:
                for fig in figs:
                    pages.savefig(fig)
        else:
            figs[0].savefig(tmp, format=suffix[1:], dpi=150)

    try:
        write_atomic(output, write)
    finally:
        for fig in figs:  # pyplot keeps every figure alive until it is closed
            _pyplot().close(fig)

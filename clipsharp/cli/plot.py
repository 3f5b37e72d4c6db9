"""``clipsharp plot``: the paper's figures from reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from ..core.outputs import check_output, uninterrupted
from ..options import option
from .output import console, guard


def command(
    reports: Annotated[
        list[Path], option(..., "Reports (JSON) made by clipsharp commands.", argument=True)
    ],
    *,
    output: Annotated[
        Path,
        option(
            ...,
            "Figure file: .png, .svg, or .pdf. Several figures: FILE-1.png, FILE-2.png, "
            "... (a .pdf keeps one page each).",
            metavar="FILE",
            short="-o",
        ),
    ],
) -> None:
    """Draw the paper's figure for each report (PNG, SVG or PDF by the suffix of -o).

    interpolate: accuracy and loss along the path, best alpha and zero-shot marked
    (Fig. 1); layerwise: layer x alpha heatmap (Fig. 2); sharpness: sharpness
    along the path with error bars, saturated points hollow (Fig. 3); stragglers:
    per-layer sharpness, stragglers and the z threshold marked (Fig. 4); prune:
    the path before and after pruning (Fig. 5). Several reports of the same kind
    are overlaid; several figures go to numbered files, or pages of a .pdf.

    Example:

        clipsharp plot before.json after.json -o prune.png
    """
    from ..reports.plot import figure_groups, figure_paths, figures, save_figures
    from ..reports.report import read_report

    check_output(str(output))
    inputs = [("the report", path) for path in reports]
    guard([("-o", output)], inputs)
    docs = [read_report(path, complete=True) for path in reports]
    names = [str(path) for path in reports]
    groups = figure_groups(docs, names)
    paths = figure_paths(output, len(groups))
    guard([("-o", path) for path in paths], inputs)  # each numbered name too
    figs = figures(docs, names)
    with uninterrupted():  # all the numbered files, or none
        written = save_figures(figs, output)
    kinds = [group[0]["command"] for group in groups]
    out = console()
    if len(written) < len(figs):
        out.print(f"{len(figs)} figures written to {output}, a page each: {', '.join(kinds)}")
    else:
        for path, kind in zip(written, kinds, strict=True):
            out.print(f"{kind} figure written to {path}")

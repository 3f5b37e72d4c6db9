"""``clipsharp plot``: the paper's figures from reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import check_output, console, guard


def command(
    reports: Annotated[
        list[Path],
        typer.Argument(help="Reports (JSON) made by clipsharp commands.", show_default=False),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Figure file: .png, .svg, or .pdf (one page each)."),
    ],
) -> None:
    """Draw the paper's figure for each report (PNG, SVG or PDF by the suffix of -o).

    interpolate: accuracy and loss along the path (Fig. 1); layerwise: layer x
    alpha heatmap (Fig. 2); sharpness: sharpness along the path with error bars
    (Fig. 3); stragglers: per-layer sharpness, stragglers marked (Fig. 4);
    prune: the path before and after pruning (Fig. 5). Several reports of the
    same kind are overlaid; several kinds need a .pdf.

    Example:

        clipsharp plot before.json after.json -o prune.png
    """
    from ..plots import figures, save_figures
    from ..report import read_report

    check_output(str(output))
    guard([("-o", output)], [("the report", path) for path in reports])
    docs = [read_report(path, complete=True) for path in reports]
    figs = figures(docs, [str(p) for p in reports])
    save_figures(figs, output)
    console().print(f"{len(figs)} figure(s) written to {output}")

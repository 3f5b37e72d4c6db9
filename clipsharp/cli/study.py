"""``clipsharp study``: which measure ranks the OOD gain across fine-tuned checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import options as opt
from .output import check_output, console, finish, fmt, guard, summary_table


def command(
    reports: Annotated[
        list[Path],
        typer.Argument(
            help="interpolate reports (one per fine-tuned checkpoint), with any sharpness, "
            "layerwise and stragglers reports of the same checkpoints.",
            show_default=False,
        ),
    ],
    output: opt.Output = None,
    format: opt.Format = "table",
) -> None:
    """Rank correlation of every measure with the OOD gain, across fine-tuned checkpoints.

    The paper's central claim as a table: for many fine-tunes of one zero-shot
    model, does sharpness (or depth, barrier, ...) rank their gain from robust
    fine-tuning? Reports are matched to checkpoints by sha256.

    Example:

        clipsharp study reports/interpolate-*.json reports/sharpness-*.json
    """
    from ..study import run_study

    form = opt.check_format(format)
    check_output(output)
    guard([("-o", output)], [("the report", path) for path in reports])
    report = run_study(reports)
    finish(report, study_table(report.to_dict()), output, console(), form=form)


def study_table(doc: dict) -> Table:
    correlations = doc["summary"]["correlations"]
    table = summary_table(
        f"Spearman correlation with the OOD gain over {doc['inputs']['num_checkpoints']} "
        "fine-tuned checkpoints",
        ["measure"],
        [],
    )
    for name in correlations:  # headers of long names wrap; the values are 5 characters
        table.add_column(escape(f"gain[{name}]"), justify="right", min_width=5)
    measures = sorted({m for c in correlations.values() for m in c})
    for measure in measures:
        cells = [correlations[name].get(measure, {}).get("spearman") for name in correlations]
        table.add_row(escape(measure), *(fmt(c, 2) for c in cells))
    return table

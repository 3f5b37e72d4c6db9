"""``clipsharp show``: a saved report's summary table again, without re-running anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from ..options import Rendering, option
from .output import console, show_summary
from .params import offer


@dataclass(frozen=True)
class Summary(Rendering):
    """--format of show: the report is the JSON, so a table or markdown only."""

    formats = ("table", "md")


@offer(
    "rendering.show_config",
    helps={
        "rendering.format": "table: the summary on stderr, as the command showed it; md: a "
        "GitHub markdown table on stdout."
    },
    metavars={"rendering.format": "table|md"},
)
def command(
    report: Annotated[
        Path,
        option(
            ..., "A report (JSON) written by a clipsharp command.", metavar="REPORT", argument=True
        ),
    ],
    *,
    rendering: Summary,
) -> None:
    """Show a saved report's summary table (and its warnings) as the command printed it.

    Works on the report of every analysis command: interpolate, layerwise,
    sharpness, stragglers, prune, merge, inspect and study.

    Example:

        clipsharp show path.json --format md >> "$GITHUB_STEP_SUMMARY"
    """
    from ..reports.report import read_report

    doc = read_report(report, complete=True)
    show_summary(doc, console(), rendering.format, name=str(report))

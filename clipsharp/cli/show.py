"""``clipsharp show``: a saved report's summary table again, without re-running anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from rich.console import Console, RenderableType

from ..errors import ReportError
from ..options import option
from .output import console, markdown, to_stdout
from .params import Rendering, offer


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
    table, warn = renderer(doc, report)
    out = console()
    if warn is not None:
        warn(doc, out)
    if rendering.format == "md":
        to_stdout(markdown(table(doc)))
    else:
        out.print(table(doc))


Render = Callable[[dict], RenderableType]
Warn = Callable[[dict, Console], None]


def renderer(doc: dict, path: Path) -> tuple[Render, Warn | None]:
    """The table function of the report's command, and its warnings (None: it has none)."""
    from . import inspect as inspection
    from . import interpolate, layerwise, merge, prune, sharpness, stragglers, study

    tables: dict[str, tuple[Render, Warn | None]] = {
        "interpolate": (interpolate.path_table, interpolate.warn_chance),
        "layerwise": (layerwise.layer_table, None),
        "sharpness": (sharpness.sharpness_table, sharpness.warn_saturated),
        "stragglers": (stragglers.straggler_table, None),
        "prune": (prune.prune_tables, None),
        "merge": (merge.merge_table, None),
        "inspect": (inspection.layer_table, None),
        "study": (study.study_table, None),
    }
    found = tables.get(doc["command"])
    if found is None:
        raise ReportError(
            f"{path} is a {doc['command']!r} report, which has no summary table; "
            f"show renders {', '.join(tables)} reports"
        )
    return found

"""``clipsharp check``: a CI gate on a report. Exit 0: passed, 1: a check failed, 2: bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..options import Rendering, option
from ..reports.gates import Gates, run_checks
from ..reports.tables import verdict_markdown, verdict_table
from .output import console, draw, to_stdout
from .params import offer

GATE_FAILED = 1


@offer(
    helps={
        "rendering.format": "table (stderr), json (the verdict, stdout) or md (GitHub "
        "markdown, stdout)."
    }
)
def command(
    report: Annotated[Path, option(..., "A clipsharp report (JSON).", argument=True)],
    *,
    gates: Gates,
    rendering: Rendering,
) -> None:
    """Exit 1 when a report fails a threshold: a CI gate.

    Named thresholds apply to every dataset that has the field, except the gain
    and failure-mode gates, which apply to the OOD datasets (--datasets overrides
    both). A missing or null field is a failure. Exit 0: every check passed;
    1: a check failed; 2: bad usage or an unreadable report.

    Example:

        clipsharp check path.json --no-failure-mode --min-gain 0.01 --format md
    """
    from ..reports.report import read_report

    doc = read_report(report)
    old = read_report(gates.baseline) if gates.baseline else None
    verdict = run_checks(
        doc,
        gates,
        old,
        report_name=report.name,
        baseline_name=gates.baseline.name if gates.baseline else "the baseline",
    )
    out = console()
    if rendering.format == "json":
        to_stdout(json.dumps(verdict.to_dict(), indent=2) + "\n")
    elif rendering.format == "md":
        to_stdout(verdict_markdown(verdict, report.name))
    else:
        out.print(draw(verdict_table(verdict, report.name)))
    failed = len(verdict.failures)
    if verdict.passed:
        out.print(f"check passed: {len(verdict.checks)} checks on {report.name}", markup=False)
        return
    out.print(
        f"check FAILED: {failed} of {len(verdict.checks)} checks on {report.name}", markup=False
    )
    raise typer.Exit(GATE_FAILED)

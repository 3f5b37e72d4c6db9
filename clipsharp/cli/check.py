"""``clipsharp check``: a CI gate on a report. Exit 0: passed, 1: a check failed, 2: bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..options import option
from ..reports.gates import Check, Verdict, show_value
from ..reports.tables import Table
from .output import console, draw, to_stdout
from .params import Rendering, offer

GATES = "Gates"
BASELINE = "Baseline"
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
    min_gain: Annotated[
        float | None, option(None, "Each OOD dataset: gain >= this.", metavar="X", panel=GATES)
    ],
    max_depth: Annotated[
        float | None, option(None, "Each dataset: depth <= this.", metavar="X", panel=GATES)
    ],
    max_barrier: Annotated[
        float | None, option(None, "Each dataset: barrier <= this.", metavar="X", panel=GATES)
    ],
    max_sharpness: Annotated[
        float | None,
        option(
            None,
            "Sharpness reports, each dataset and rho: max_sharpness <= this.",
            metavar="X",
            panel=GATES,
        ),
    ],
    no_failure_mode: Annotated[
        bool, option(False, "Fail when any OOD dataset has failure_mode true.", panel=GATES)
    ],
    require: Annotated[
        list[str] | None,
        option(
            None,
            "FIELD<OP>VALUE on a dotted path in summary, OP one of <= >= < > ==; "
            "'*' matches every dataset (or element): 'shifted.gain>=0.02', '*.gain>0'. "
            "Repeatable.",
            metavar="FIELD<OP>VALUE",
            panel=GATES,
        ),
    ],
    datasets: Annotated[
        str | None,
        option(
            None,
            "Gate exactly these datasets (comma-separated) with every threshold, and "
            "with '*' in --require. Default: gain and failure mode on OOD sets, the rest "
            "on every set.",
            metavar="NAMES",
            panel=GATES,
        ),
    ],
    baseline: Annotated[
        Path | None,
        option(
            None,
            "An earlier report of the same command to compare with.",
            metavar="REPORT",
            panel=BASELINE,
        ),
    ],
    max_drop: Annotated[
        str | None,
        option(
            None,
            "With --baseline: best_accuracy and gain of each baseline dataset may drop "
            "by at most this (absolute, 0.01) or this percentage of the baseline (1%).",
            metavar="X|P%",
            panel=BASELINE,
        ),
    ],
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
    from ..reports.gates import Gates, Requirement, baseline_max_drop, run_checks
    from ..reports.report import read_report

    gates = Gates(
        min_gain=min_gain,
        max_depth=max_depth,
        max_barrier=max_barrier,
        max_sharpness=max_sharpness,
        no_failure_mode=no_failure_mode,
        requires=tuple(Requirement.parse(text) for text in require or []),
        datasets=_names(datasets),
        max_drop=baseline_max_drop(baseline, max_drop),
    )
    doc = read_report(report)
    old = read_report(baseline) if baseline else None
    verdict = run_checks(
        doc,
        gates,
        old,
        report_name=report.name,
        baseline_name=baseline.name if baseline else "the baseline",
    )
    out = console()
    if rendering.format == "json":
        to_stdout(json.dumps(verdict.to_dict(), indent=2) + "\n")
    elif rendering.format == "md":
        to_stdout(to_markdown(verdict, report.name))
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


def _names(text: str | None) -> tuple[str, ...] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ConfigError(f"--datasets {text!r} names no dataset; write a,b")
    return names


def verdict_table(verdict: Verdict, title: str) -> Table:
    from ..reports.tables import Mark

    table = Table(
        f"clipsharp check {title}", ("", "dataset", "field", "requirement", "value", "detail")
    )
    for c in verdict.checks:
        mark = Mark("ok", "good") if c.passed else Mark("FAIL", "alarm")
        value = show_value(c.value, near=c.threshold)
        cells = (c.dataset or "-", c.field or "-", _requirement(c), value)
        table.add(mark, *cells, "" if c.passed else c.message)
    return table


def to_markdown(verdict: Verdict, title: str) -> str:
    """A one-line verdict and a GitHub-flavoured table, one row per check (for
    ``$GITHUB_STEP_SUMMARY``)."""
    failed = len(verdict.failures)
    total = len(verdict.checks)
    if verdict.passed:
        line = f"**✅ clipsharp check passed**: {total} of {total} checks passed on `{title}`"
    else:
        line = f"**❌ clipsharp check failed**: {failed} of {total} checks failed on `{title}`"
    rows = [
        line,
        "",
        "| | dataset | field | requirement | value | detail |",
        "|---|---|---|---|---|---|",
    ]
    for c in verdict.checks:
        cells = [
            "✅" if c.passed else "❌",
            c.dataset or "-",
            c.field or "-",
            _requirement(c),
            show_value(c.value),
            c.message,
        ]
        rows.append("| " + " | ".join(_cell(text) for text in cells) + " |")
    return "\n".join(rows) + "\n"


def _requirement(check: Check) -> str:
    if check.threshold is None:
        return check.op or "-"
    return f"{check.op} {show_value(check.threshold)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

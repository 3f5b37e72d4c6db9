"""``clipsharp stragglers``: the layers whose sharpness singles them out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import options as opt
from .common import Common, Measure, analysis
from .output import (
    check_output,
    check_resume,
    checkpoint_inputs,
    console,
    finish,
    fmt,
    guard,
    progress_bars,
    signed,
    summary_table,
)
from .sharpness import _roles

RULE = "Straggler rule"


@analysis(limit=1024)
def command(
    checkpoints: opt.Checkpoints,
    by: Annotated[
        str,
        typer.Option(
            help="Rank layers by layer-wise sharpness, or by their depth in a layerwise "
            "report (barrier; needs --layerwise).",
            rich_help_panel=RULE,
        ),
    ] = "sharpness",
    z: Annotated[
        float,
        typer.Option(
            "--z", help="Robust z-score above which a layer is a straggler.", rich_help_panel=RULE
        ),
    ] = 3.5,
    top_k: Annotated[
        int | None,
        typer.Option(
            help="Instead of --z: the K highest layers of each tower.", rich_help_panel=RULE
        ),
    ] = None,
    layerwise: Annotated[
        Path | None,
        typer.Option(
            help="A layerwise report of the same pair: --by barrier ranks by its depths; "
            "with --by sharpness, the Spearman correlation of sharpness and depth is reported.",
            rich_help_panel=RULE,
        ),
    ] = None,
    rank_on: Annotated[
        str | None,
        typer.Option(
            help="Dataset whose values rank the layers (default: the ID set, else the first).",
            rich_help_panel=RULE,
        ),
    ] = None,
    output: opt.Output = None,
    resume: opt.Resume = False,
    *,
    common: Common,
    measure: Measure,
) -> None:
    """Layer-wise sharpness and its outliers, the straggler layers (the paper's Fig. 4).

    Each layer group of the image tower (the text tower too with --include-text)
    is perturbed alone; its sharpness is measured on the fine-tuned model and,
    for reference, on the zero-shot one. Stragglers: robust z-score above --z
    within their tower, or the --top-k highest.

    Example:

        clipsharp stragglers zs.safetensors ft.safetensors \\
            --ood data/shifted -o stragglers.json
    """
    from ..report import read_report
    from ..stragglers import StragglerOptions, barrier_stragglers_of, run_stragglers

    form = common.form
    roles = _roles(checkpoints)
    rule = StragglerOptions(by, z, top_k, rank_on)
    sharpness = measure.options()  # checked before any work
    journal = check_resume(resume, check_output(output))
    guard(
        [("-o", output), ("--data-cache", common.data_cache)],
        [*checkpoint_inputs(roles), ("the --layerwise report", layerwise), *common.inputs()],
    )
    out = console()
    if by == "barrier":
        report = barrier_stragglers_of(roles, layerwise, rule)
    else:
        doc = read_report(layerwise, "layerwise", complete=True) if layerwise else None
        run = common.run_options()
        with progress_bars(out) as progress:
            report = run_stragglers(
                common.reading(roles), run, sharpness, rule, layerwise=doc, progress=progress,
                journal=journal, resume=resume,
            )  # fmt: skip
    finish(report, straggler_table(report.to_dict()), output, out, journal, form=form)


def straggler_table(doc: dict) -> Table:
    s = doc["summary"]
    stragglers = set(s["stragglers"])
    value = "sharpness" if s["by"] == "sharpness" else "depth"
    table = summary_table(
        f"stragglers on {s['rank_on']}: {s['rule']}",
        ["layer"],
        ["tower", value, "stderr", "zero-shot", "z", ""],
    )
    for row in sorted(doc["results"]["layers"], key=lambda r: -r[value]):
        mark = "[bold red]STRAGGLER[/]" if row["layer"] in stragglers else ""
        table.add_row(
            escape(row["layer"]), row["tower"], signed(row[value]), fmt(row.get("stderr")),
            signed(row.get("zero_shot_sharpness")), f"{row['z']:+.2f}", mark,
        )  # fmt: skip
    if s.get("spearman"):
        table.caption = "Spearman(sharpness, layer depth): " + ", ".join(
            f"{name} {fmt(v['spearman'], 2)} ({v['layers']} layers)"
            for name, v in s["spearman"].items()
        )
    return table

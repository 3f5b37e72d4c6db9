"""``clipsharp stragglers``: the layers whose sharpness singles them out."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated

from ..options import (
    RULE,
    InputOptions,
    PathOptions,
    RunOptions,
    SharpnessOptions,
    StragglerOptions,
    option,
)
from . import options as opt
from .output import console, finish, guard_run, reading
from .params import Rendering, offer
from .progress import progress_bars
from .sharpness import _roles

PATH_FIELDS = [f.name for f in fields(PathOptions)]  # stragglers measures no path


@offer(*(f"run.path.{name}" for name in PATH_FIELDS), defaults={"run.data.limit": 1024})
def command(
    checkpoints: opt.Checkpoints,
    *,
    layerwise: Annotated[
        Path | None,
        option(
            None,
            "A layerwise report of the same pair: --by barrier ranks by its depths; "
            "with --by sharpness, the Spearman correlation of sharpness and depth is reported.",
            metavar="REPORT",
            panel=RULE,
        ),
    ],
    output: opt.Output,
    resume: opt.Resume,
    inputs: InputOptions,
    run: RunOptions,
    sharpness: SharpnessOptions,
    rule: StragglerOptions,
    rendering: Rendering,
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
    from ..analyses.stragglers import barrier_stragglers_of, run_stragglers
    from ..reports.report import read_report

    roles = _roles(checkpoints)
    read = [("the --layerwise report", layerwise)]
    guard_run(output, resume, roles, inputs, run, read=read)
    out = console()
    if rule.by == "barrier":
        report = barrier_stragglers_of(roles, layerwise, rule)
    else:
        doc = read_report(layerwise, "layerwise", complete=True) if layerwise else None
        with progress_bars(out) as progress:
            report = run_stragglers(
                reading(roles, inputs),
                run,
                sharpness,
                rule,
                layerwise=doc,
                progress=progress,
                output=output,
                resume=resume,
                reads=read,
            )
    written = rule.by != "barrier"  # by the library's run, with the report
    finish(report, output, out, form=rendering.format, written=written)

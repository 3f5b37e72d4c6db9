"""``clipsharp stragglers``: the layers whose sharpness singles them out."""

from __future__ import annotations

from dataclasses import fields

from rich.markup import escape
from rich.table import Table

from ..options import InputOptions, PathOptions, RunOptions, SharpnessOptions, StragglerOptions
from . import options as opt
from .output import config_read, console, finish
from .params import Rendering, offer
from .progress import fmt, progress_bars, signed, summary_table
from .sharpness import _roles

PATH_FIELDS = [f.name for f in fields(PathOptions)]  # stragglers measures no path


@offer(*(f"run.path.{name}" for name in PATH_FIELDS), defaults={"run.data.limit": 1024})
def command(
    checkpoints: opt.Checkpoints,
    *,
    output: opt.Output,
    resume: opt.Resume,
    rule: StragglerOptions,
    inputs: InputOptions,
    run: RunOptions,
    sharpness: SharpnessOptions,
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
    from ..analyses.stragglers import run_stragglers
    from ..core.workspace import Inputs

    out = console()
    with progress_bars(out) as progress:
        report = run_stragglers(
            Inputs.of(_roles(checkpoints), inputs),
            run,
            sharpness,
            rule,
            output=output,
            resume=resume,
            progress=progress,
            reads=config_read(),
        )
    finish(
        report, straggler_table(report.to_dict()), output, out, form=rendering.format, written=True
    )


def straggler_table(doc: dict) -> Table:
    s = doc["summary"]
    stragglers = set(s["stragglers"])
    value = "sharpness" if s["by"] == "sharpness" else "depth"
    table = summary_table(
        escape(f"stragglers on {s['rank_on']}: {s['rule']}"),
        ["layer"],
        ["tower", value, "stderr", "zero-shot", "z", ""],
    )
    for row in sorted(doc["results"]["layers"], key=lambda r: -r[value]):
        mark = "[bold red]STRAGGLER[/]" if row["layer"] in stragglers else ""
        table.add_row(
            escape(row["layer"]),
            escape(row["tower"]),
            signed(row[value]),
            fmt(row.get("stderr")),
            signed(row.get("zero_shot_sharpness")),
            f"{row['z']:+.2f}",
            mark,
        )
    if s.get("spearman"):
        table.caption = "Spearman(sharpness, layer depth): " + ", ".join(
            f"{escape(name)} {fmt(v['spearman'], 2)} ({v['layers']} layers)"
            for name, v in s["spearman"].items()
        )
    return table

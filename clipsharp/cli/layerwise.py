"""``clipsharp layerwise``: which layers make or break the interpolation."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..options import InputOptions, LayerwiseOptions, RunOptions
from . import options as opt
from .output import config_read, console, finish, gate
from .params import Rendering, offer
from .progress import fmt, progress_bars, signed, summary_table


@offer(
    "run.path.failure_threshold",
    helps={"fail_on": "Exit 1 after writing the report when a layer collapses: collapse."},
)
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    *,
    output: opt.Output,
    resume: opt.Resume,
    fail_on: opt.FailOn,
    inputs: InputOptions,
    run: RunOptions,
    layerwise: LayerwiseOptions,
    rendering: Rendering,
) -> None:
    """Move one layer at a time between zero-shot and fine-tuned weights (the paper's Fig. 2).

    For each layer group and alpha, every other layer holds the background model.
    Reports per layer and dataset the gain, depth and barrier of the layer's path
    and whether it collapses. Layers equal in both checkpoints are listed as
    unchanged and not evaluated.

    Example:

        clipsharp layerwise zs.safetensors ft.safetensors \\
            --ood data/shifted --alphas 0,0.5,1
    """
    from ..analyses.layerwise import run_layerwise
    from ..core.workspace import Inputs

    opt.check_fail_on(fail_on, "collapse")
    out = console()
    with progress_bars(out) as progress:
        report = run_layerwise(
            Inputs.of({"zero_shot": zero_shot, "fine_tuned": fine_tuned}, inputs),
            run,
            layerwise,
            output=output,
            resume=resume,
            progress=progress,
            reads=config_read(),
        )
    finish(report, layer_table(report.to_dict()), output, out, form=rendering.format, written=True)
    gate(report, fail_on, out)


def layer_table(doc: dict) -> Table:
    """One row per layer, sorted by depth on the first OOD set (else the first set)."""
    datasets = doc["inputs"]["datasets"]
    focus = next((d for d in datasets if d["role"] == "ood"), datasets[0])["name"]
    background = doc["config"]["background"]
    table = summary_table(
        f"layerwise on {escape(focus)}: background {escape(background)}, α 0 = zero-shot layer",
        ["layer"],
        ["tower", "gain", "depth", "barrier", "min acc", "collapse"],
    )
    rows = doc["summary"]["layers"]
    changed = sorted((r for r in rows if not r["unchanged"]), key=lambda r: -r[focus]["depth"])
    towers = {r["layer"]: r["tower"] for r in doc["results"]["layers"]}
    for row in changed:
        s = row[focus]
        collapse = "[bold red]COLLAPSE[/]" if s["collapse"] else "no"
        table.add_row(
            escape(row["layer"]),
            escape(towers.get(row["layer"], "-")),
            signed(s["gain"]),
            signed(s["depth"]),
            signed(s["barrier"]),
            fmt(s["min_accuracy"]),
            collapse,
        )
    unchanged = [r["layer"] for r in rows if r["unchanged"]]
    if unchanged:
        table.caption = escape(f"unchanged (not evaluated): {', '.join(unchanged)}")
    return table

"""``clipsharp layerwise``: which layers make or break the interpolation."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import options as opt
from .common import Common, analysis
from .output import (
    check_output,
    check_resume,
    checkpoint_inputs,
    console,
    finish,
    fmt,
    gate,
    guard,
    progress_bars,
    signed,
    summary_table,
)

LAYERS = "Layers"


FailOn = opt.with_help(
    opt.FailOn, "Exit 1 after writing the report when a layer collapses: collapse."
)


@analysis()
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    granularity: Annotated[
        str,
        typer.Option(
            help="Layer groups: block (transformer blocks, embeddings, heads), module "
            "(a weight with its bias) or tensor.",
            rich_help_panel=LAYERS,
        ),
    ] = "block",
    background: Annotated[
        str,
        typer.Option(
            help="ft: every other layer fine-tuned, one layer moves toward zero-shot; "
            "zs: every other layer zero-shot, one moves toward fine-tuned.",
            rich_help_panel=LAYERS,
        ),
    ] = "ft",
    layers: Annotated[
        str | None,
        typer.Option(
            help="Only these layers: a comma list of names or globs ('visual.block.*'); "
            "clipsharp inspect lists the names.",
            rich_help_panel=LAYERS,
        ),
    ] = None,
    collapse_threshold: Annotated[
        float,
        typer.Option(
            help="A layer collapses when the accuracy on its path falls this far below "
            "both endpoints.",
            rich_help_panel=LAYERS,
        ),
    ] = 0.05,
    prefix_cache: Annotated[
        bool,
        typer.Option(
            "--prefix-cache/--no-prefix-cache",
            help="Reuse the activations below the moving layer (ViT image towers; exact).",
            rich_help_panel=LAYERS,
        ),
    ] = True,
    alphas: opt.Alphas = "0:1:0.1",
    extrapolate: opt.Extrapolate = False,
    exclude: opt.Exclude = None,
    output: opt.Output = None,
    resume: opt.Resume = False,
    fail_on: FailOn = None,
    *,
    common: Common,
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
    from ..layerwise import LayerwiseOptions, run_layerwise

    run = common.run_options(alphas=alphas, extrapolate=extrapolate, exclude=exclude)
    layer_options = LayerwiseOptions(
        granularity, background, layers, collapse_threshold, prefix_cache
    )
    form = common.form
    opt.check_fail_on(fail_on, "collapse")
    report_path = check_output(output)
    roles = {"zero_shot": zero_shot, "fine_tuned": fine_tuned}
    guard(
        [("-o", output), ("--data-cache", common.data_cache)],
        [*checkpoint_inputs(roles), *common.inputs()],
    )
    journal = check_resume(resume, report_path)
    out = console()
    with progress_bars(out) as progress:
        report = run_layerwise(
            common.reading(roles),
            run,
            layer_options,
            progress=progress,
            journal=journal,
            resume=resume,
        )
    finish(report, layer_table(report.to_dict()), output, out, journal, form=form)
    gate(report, fail_on, out)


def layer_table(doc: dict) -> Table:
    """One row per layer, sorted by depth on the first OOD set (else the first set)."""
    datasets = doc["inputs"]["datasets"]
    focus = next((d for d in datasets if d["role"] == "ood"), datasets[0])["name"]
    background = doc["config"]["background"]
    table = summary_table(
        f"layerwise on {focus}: background {background}, α 0 = zero-shot layer",
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
            escape(row["layer"]), towers[row["layer"]], signed(s["gain"]), signed(s["depth"]),
            signed(s["barrier"]), fmt(s["min_accuracy"]), collapse,
        )  # fmt: skip
    unchanged = [r["layer"] for r in rows if r["unchanged"]]
    if unchanged:
        table.caption = f"unchanged (not evaluated): {', '.join(unchanged)}"
    return table

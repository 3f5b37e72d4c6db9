"""``clipsharp prune``: sparsify chosen (straggler) layers of a fine-tuned checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape

from .. import options as opt
from ..options import InputOptions, PruneOptions, Rendering, RunOptions, option
from .output import config_read, console, finish
from .params import offer
from .progress import progress_bars


@offer("run.path.exclude", "run.path.extrapolate", "run.path.failure_threshold")
def command(
    fine_tuned: opt.FineTuned,
    *,
    output: Annotated[
        Path,
        option(
            ...,
            "The pruned checkpoint, in the input's format: a .safetensors file (open_clip) "
            "or a folder (transformers); never an input.",
            metavar="FILE|FOLDER",
            short="-o",
        ),
    ],
    zero_shot: Annotated[
        Path | None,
        option(
            None,
            "The zero-shot checkpoint: for --target task-vector and --id/--ood.",
            metavar="FILE",
        ),
    ],
    report: opt.ReportFile,
    pruning: PruneOptions,
    inputs: InputOptions,
    run: RunOptions,
    rendering: Rendering,
) -> None:
    """Prune the chosen layers of a fine-tuned checkpoint into a new one (the paper's Fig. 5).

    Per tensor of each chosen layer, the fraction --sparsity of entries with the
    smallest magnitude is zeroed (or, with --target task-vector, returned to its
    zero-shot value). Written in the fine-tuned checkpoint's format: open_clip
    safetensors, or a transformers folder that CLIPModel.from_pretrained loads.
    With --id/--ood, the interpolation path is measured before and after pruning.

    Example:

        clipsharp prune ft.safetensors --from stragglers.json \\
            -o ft-pruned.safetensors
    """
    from ..analyses.prune import prune
    from ..core.workspace import Inputs

    roles = ({"zero_shot": zero_shot} if zero_shot else {}) | {"fine_tuned": fine_tuned}
    out = console()
    with progress_bars(out) as progress:
        result = prune(
            Inputs.of(roles, inputs),
            output,
            pruning,
            run,
            report=report,
            progress=progress,
            reads=config_read(),
        )
    if (inputs.id or inputs.ood) and zero_shot is None:
        out.print(
            "[yellow]warning:[/] datasets given without --zero-shot: the path before and "
            "after pruning is not measured (add --zero-shot ZS to measure it)"
        )
    if not result.summary["layers"]:
        out.print(
            f"[yellow]warning:[/] {escape(str(pruning.from_report))} lists no straggler "
            f"layers: nothing was pruned, {escape(str(output))} holds the fine-tuned weights "
            "unchanged"
        )
    finish(result, report, out, flag="--report", form=rendering.format, written=True)
    out.print(f"pruned checkpoint written to {output}")

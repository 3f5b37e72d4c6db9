"""``clipsharp prune``: sparsify chosen (straggler) layers of a fine-tuned checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape

from ..core.outputs import check_folder, check_output, checkpoint_inputs, uninterrupted
from ..errors import ClipsharpError
from ..options import PRUNE, InputOptions, PruneOptions, RunOptions, option
from . import options as opt
from .output import console, finish, guard, option_files
from .params import Rendering, offer
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
    layers: Annotated[
        str | None,
        option(
            None, "Layers to prune: names or globs, comma-separated.", metavar="NAMES", panel=PRUNE
        ),
    ],
    from_report: Annotated[
        Path | None,
        option(
            None,
            "Prune the stragglers of this stragglers report.",
            metavar="REPORT",
            panel=PRUNE,
            name="--from",
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
    inputs: InputOptions,
    run: RunOptions,
    pruning: PruneOptions,
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
    from ..core.distributed import is_main
    from ..core.saving import discard
    from ..data.specs import dataset_specs

    if output.is_dir():  # a transformers folder (the library checks the format)
        check_folder(output, "-o")
    else:
        check_output(str(output))
    check_output(report, "--report")
    roles = ({"zero_shot": zero_shot} if zero_shot else {}) | {"fine_tuned": fine_tuned}
    guard(
        [("-o", output), ("--report", report), ("--data-cache", run.data.cache_dir)],
        [*checkpoint_inputs(roles), ("the --from report", from_report), *option_files(inputs, run)],
    )
    specs = dataset_specs(inputs)
    out = console()
    if specs and zero_shot is None:
        out.print(
            "[yellow]warning:[/] datasets given without --zero-shot: the path before and "
            "after pruning is not measured (add --zero-shot ZS to measure it)"
        )
    staged = output.with_name(f".{output.name}.pending")  # renamed to -o with the report
    try:
        with progress_bars(out) as progress:
            result = prune(
                roles,
                output,
                pruning,
                layers=layers,
                from_report=from_report,
                specs=specs,
                run=run,
                model=inputs.model,
                allow_nonfinite=inputs.allow_nonfinite,
                write_to=staged,
                progress=progress,
            )
        if not result.summary["layers"]:
            out.print(
                f"[yellow]warning:[/] {escape(str(from_report))} lists no straggler layers: "
                f"nothing was pruned, {escape(str(output))} holds the fine-tuned weights unchanged"
            )
        with uninterrupted():
            finish(result, report, out, flag="--report", form=rendering.format)
            commit(staged, output, report)
        out.print(f"pruned checkpoint written to {output}")
    finally:
        if is_main():  # the writer: another rank leaves it be
            discard(staged)


def commit(staged: Path, output: Path, report: str | None) -> None:
    """Move the pruned checkpoint to -o once its report is written; without it, no report."""
    from ..core.saving import commit as move

    if not staged.exists():  # under torchrun, another process writes
        return
    try:
        move(staged, output)
    except ClipsharpError:
        if report not in (None, "-"):
            Path(report).unlink(missing_ok=True)
        raise

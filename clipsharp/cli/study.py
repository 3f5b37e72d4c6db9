"""``clipsharp study``: which measure ranks the OOD gain across fine-tuned checkpoints."""

from __future__ import annotations

from rich.markup import escape

from .. import options as opt
from ..options import InputOptions, Rendering, StudyOptions, SweepOptions
from .output import config_read, console, finish
from .params import offer
from .progress import progress_bars


@offer(
    "sweep.run.path.exclude",
    "sweep.run.path.extrapolate",
    "sweep.run.path.failure_threshold",
    "sweep.stragglers.layerwise",
    "sweep.stragglers.by",
    "sweep.stragglers.rank_on",
    helps={
        "sweep.run.data.seed": "Seed of every random choice: --limit subsets, noise draws, "
        "the bootstrap and the permutations.",
        "resume": "Continue an analysis cut short from its journal in --reports-dir (same "
        "inputs and options only). Finished models are reused with or without it.",
    },
)
def command(
    *,
    output: opt.Output,
    resume: opt.Resume,
    study: StudyOptions,
    inputs: InputOptions,
    sweep: SweepOptions,
    rendering: Rendering,
) -> None:
    """Which measure ranks the OOD gain across fine-tuned checkpoints, and how sure that is.

    The paper's central claim, tested on your own models: for many fine-tunes
    of one zero-shot model, does sharpness (or depth, barrier, the stragglers,
    the size of the change, ...) rank their gain from robust fine-tuning? Given
    checkpoints, runs interpolate, sharpness and stragglers (and layerwise with
    --layerwise) on each model, writing their reports, resumably; given reports,
    matches them to checkpoints by sha256. Per OOD set and measure: Spearman,
    Kendall tau-b, a bootstrap interval and a permutation p-value.

    Example:

        clipsharp study zs.safetensors sweep/*.safetensors --ood data/shifted -o study.json
    """
    from ..analyses.study import study as run_study

    out = console()
    with progress_bars(out) as progress:
        report = run_study(
            study,
            inputs,
            sweep,
            output=output,
            resume=resume,
            progress=progress,
            say=lambda text: out.print(escape(text)),
            reads=config_read(),
        )
    for skipped in report.inputs.get("skipped", []):
        out.print(f"note: {skipped} is not a report a study reads; skipped", markup=False)
    finish(report, output, out, form=rendering.format, written=True)

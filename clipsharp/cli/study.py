"""``clipsharp study``: which measure ranks the OOD gain across fine-tuned checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

from rich.markup import escape

from ..core.outputs import check_folder, check_output, checkpoint_inputs
from ..errors import ConfigError
from ..options import InputOptions, LayerwiseOptions, SweepOptions, option
from . import options as opt
from .output import console, finish, guard, option_files, reading
from .params import Rendering, offer
from .progress import progress_bars

STUDY = "Study"


@offer(
    "study.run.path.exclude",
    "study.run.path.extrapolate",
    "study.run.path.failure_threshold",
    "study.stragglers.by",
    "study.stragglers.rank_on",
    helps={
        "study.run.data.seed": "Seed of every random choice: --limit subsets, noise draws, "
        "the bootstrap and the permutations.",
        "resume": "Continue an analysis cut short from its journal in --reports-dir (same "
        "inputs and options only). Finished models are reused with or without it.",
    },
)
def command(
    paths: Annotated[
        list[Path],
        option(
            ...,
            "A zero-shot checkpoint and its fine-tuned checkpoints: run every analysis "
            "of each; or reports (.json) already written: interpolate reports (one per "
            "fine-tuned checkpoint) with any sharpness, layerwise and stragglers reports.",
            metavar="ZERO_SHOT FINE_TUNED... | REPORT...",
            argument=True,
        ),
    ],
    *,
    layerwise: Annotated[
        bool, option(False, "Also run layerwise (block granularity) on each model.", panel=STUDY)
    ],
    reports_dir: Annotated[
        Path | None,
        option(
            None,
            "Folder of each model's reports (NAME.COMMAND.json). "
            "Default: STUDY.reports beside -o STUDY.json.",
            metavar="DIR",
            panel=STUDY,
        ),
    ],
    output: opt.Output,
    resume: opt.Resume,
    inputs: InputOptions,
    study: SweepOptions,
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
    study = replace(study, layerwise=LayerwiseOptions() if layerwise else None)
    report_path = check_output(output)
    reports = [p for p in paths if p.suffix.lower() == ".json"]
    out = console()
    if len(reports) == len(paths):
        report = _from_reports(paths, output, inputs, study)
        for skipped in report.inputs["skipped"]:
            out.print(f"note: {skipped} is not a report a study reads; skipped", markup=False)
    elif reports:
        raise ConfigError(
            f"{reports[0]} is a report among checkpoints; give checkpoints (zero-shot first) "
            "or reports, not both"
        )
    else:
        folder = _reports_dir(reports_dir, report_path)
        report = _from_checkpoints(paths, folder, study, output, resume, inputs, out)
    finish(report, output, out, form=rendering.format)


def _reports_dir(given: Path | None, output: Path | None) -> Path:
    if given is not None:
        return given
    if output is None:
        raise ConfigError(
            "a study of checkpoints writes each model's reports: give -o STUDY.json or "
            "--reports-dir DIR"
        )
    return output.with_name(output.name.removesuffix(".json") + ".reports")


def _from_reports(paths: list[Path], output, inputs: InputOptions, study: SweepOptions):
    from ..reports.correlations import run_study

    if inputs.id or inputs.ood:
        raise ConfigError("--id and --ood are for a study of checkpoints; reports name theirs")
    guard([("-o", output)], [("the report", path) for path in paths])
    return run_study(paths, study.statistics, seed=study.run.data.seed)


def _from_checkpoints(
    paths, folder: Path, options: SweepOptions, output, resume: bool, inputs, out
):
    from ..analyses.study import run_sweep
    from ..core.distributed import is_main

    if len(paths) < 2:
        raise ConfigError("give the zero-shot checkpoint, then one or more fine-tuned ones")
    check_folder(folder, "--reports-dir")
    roles = [{"zero_shot": paths[0], "fine_tuned": ft} for ft in paths[1:]]
    read = [item for r in roles for item in checkpoint_inputs(r)]
    guard(
        [("-o", output), ("--reports-dir", folder), ("--data-cache", options.run.data.cache_dir)],
        [*read, *option_files(inputs, options.run)],
    )
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
    with progress_bars(out) as progress:
        return run_sweep(
            [reading(r, inputs) for r in roles],
            options,
            folder,
            resume=resume,
            progress=progress,
            say=lambda text: out.print(escape(text)),
        )

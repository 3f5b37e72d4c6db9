"""``study``: of reports already written, or from checkpoints: for each fine-tuned model,
the analyses behind the study's measures, run through the same library calls as the single
commands (:func:`study` is the whole command, :func:`run_sweep` the part from checkpoints).

Each model's reports are written beside the study as ``NAME.COMMAND.json`` (NAME: the
fine-tuned checkpoint's file name without its suffix), atomically, on the main process
only. A report that exists and was made with the same inputs (sha256 of both checkpoints,
dataset fingerprints) and the same options is read, not recomputed; with ``resume``, an
analysis cut short continues from its journal (``NAME.COMMAND.json.partial``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..core.analysis import Analysis, files_read, run, write_report
from ..core.checkpoint import HUB_PREFIX
from ..core.distributed import is_main
from ..core.layers import layer_groups, tower_of
from ..core.outputs import Paths, check_folder, check_output, check_paths
from ..core.workspace import Inputs, Workspace
from ..errors import CheckpointError, ConfigError, ReportError
from ..options import InputOptions, LayerwiseOptions, PathOptions, StudyOptions, SweepOptions
from ..progress import Progress
from ..reports.correlations import checkpoint_row, run_study, study_report
from ..reports.report import Report, read_report
from .inspect import relative_change
from .interpolate import Interpolation
from .layerwise import Layerwise
from .sharpness import Sharpness
from .stragglers import Stragglers

Say = Callable[[str], None]  # one line for the user: a report reused, or recomputed


def analyses_of(options: SweepOptions) -> list[Analysis]:
    """interpolate, sharpness (at α = 1 and along the path), stragglers[, layerwise]: each
    configured exactly as its command would be with these options."""
    alphas = tuple(sorted({*options.sharpness_alphas, 1.0}))
    along = replace(options.run, path=replace(options.run.path, alphas=alphas))
    plain = replace(options.run, path=PathOptions())  # stragglers measures no path
    first_rho = replace(options.sharpness, rhos=options.sharpness.rhos[:1])
    found: list[Analysis] = [
        Interpolation(options.run),
        Sharpness(along, options.sharpness),
        Stragglers(plain, first_rho, options.stragglers),
    ]
    if options.layerwise is not None:
        found.append(Layerwise(options.run, options.layerwise))
    return found


def model_names(pairs: Sequence[Inputs]) -> list[str]:
    """The name of each fine-tuned checkpoint (its file stem), refusing two alike, and a
    local checkpoint that is not there, before any work."""
    names = []
    for inputs in pairs:
        path = Path(inputs.checkpoints["fine_tuned"])
        local = not str(path).startswith((HUB_PREFIX, "pretrained:"))
        if local and not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist; check the path")
        names.append(path.name.removesuffix(".safetensors") if local else path.name)
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"two fine-tuned checkpoints are named {name!r}: their reports would share a "
                "file name; rename one"
            )
    return names


def run_sweep(
    pairs: Sequence[Inputs],
    options: SweepOptions,
    reports_dir: Path,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    say: Say | None = None,
) -> Report:
    """Run the study's analyses on every (zero-shot, fine-tuned) pair, then the study.

    Args:
        pairs: one ``Inputs`` per fine-tuned model, all of one zero-shot checkpoint.
        options: the analyses and the statistics.
        reports_dir: where each model's reports go (``NAME.COMMAND.json``); must exist.
        resume: continue an analysis cut short from its journal.
        progress: as for :func:`analysis.run`; ``say``: a line per report reused or redone.

    Returns:
        The ``study`` report (the models' reports are written as they are made).
    """
    started = time.perf_counter()
    names = model_names(pairs)
    rows, interpolate = [], []
    for name, inputs in zip(names, pairs, strict=True):
        workspace = inputs.open(options.run.data, options.run.eval, progress)
        docs, files = {}, {}
        for analysis in analyses_of(options):
            analysis.check(workspace)  # every analysis's options fit, before any work
        for analysis in analyses_of(options):
            path = reports_dir / f"{name}.{analysis.command}.json"
            docs[analysis.command] = report_of(analysis, workspace, path, resume, progress, say)
            files[analysis.command] = str(path)
        rows.append(checkpoint_row(docs, files, relative_changes(workspace)))
        interpolate.append(docs["interpolate"])
        del workspace  # one working model at a time
    zero_shot = interpolate[0]["inputs"]["checkpoints"]["zero_shot"] if interpolate else None
    return study_report(
        rows,
        interpolate,
        options.statistics,
        seed=options.run.data.seed,
        started=started,
        inputs={"reports": [f for r in rows for f in r["files"].values()], "zero_shot": zero_shot},
    )


def study(
    options: StudyOptions,
    inputs: InputOptions | None = None,
    sweep: SweepOptions | None = None,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    say: Say | None = None,
    reads: Paths = (),
) -> Report:
    """The ``study`` command: of reports already written (:func:`run_study`), or of a
    zero-shot checkpoint and its fine-tuned ones (:func:`run_sweep`).

    Args:
        options: the checkpoints (zero-shot first) or the reports; ``reports_dir``, where
            each model's reports go (default: ``STUDY.reports`` beside ``output``);
            ``layerwise``: run layerwise too (``LayerwiseOptions()``, unless ``sweep`` sets
            its own).
        inputs: the datasets (of a study of checkpoints) and how to read the models.
        sweep: the analyses and the statistics.
        output: the study report's file, written atomically on the main process.
        resume, progress, say: as for :func:`run_sweep`.
        reads: other files the study reads (``(what, path)``), which no output may be.

    Before any work, ``output`` and the reports folder are checked: writable, and not an
    input.
    """
    inputs, sweep = inputs or InputOptions(), sweep or SweepOptions()
    if options.layerwise and sweep.layerwise is None:
        sweep = replace(sweep, layerwise=LayerwiseOptions())
    report_path = check_output(None if output is None else str(output))
    paths = [Path(path) for path in options.paths]
    reports = [path for path in paths if path.suffix.lower() == ".json"]
    if reports and len(reports) < len(paths):
        raise ConfigError(
            f"{reports[0]} is a report among checkpoints; give checkpoints (zero-shot first) "
            "or reports, not both"
        )
    if reports or not paths:
        if inputs.id or inputs.ood:
            raise ConfigError("--id and --ood are for a study of checkpoints; reports name theirs")
        check_paths([("-o", output)], [*(("the report", path) for path in paths), *reads])
        report = run_study(paths, sweep.statistics, seed=sweep.run.data.seed)
    else:
        folder = _reports_dir(options.reports_dir, report_path)
        pairs = _pairs(paths, folder, inputs, sweep, output, reads)
        report = run_sweep(pairs, sweep, folder, resume=resume, progress=progress, say=say)
    write_report(report, output)
    return report


def _reports_dir(given: Path | None, output: Path | None) -> Path:
    if given is not None:
        return Path(given)
    if output is None:
        raise ConfigError(
            "a study of checkpoints writes each model's reports: give -o STUDY.json or "
            "--reports-dir DIR"
        )
    return output.with_name(output.name.removesuffix(".json") + ".reports")


def _pairs(paths, folder: Path, inputs, sweep: SweepOptions, output, reads) -> list[Inputs]:
    """One ``Inputs`` per fine-tuned checkpoint, once the outputs are checked (the reports
    folder made, on the main process)."""
    if len(paths) < 2:
        raise ConfigError("give the zero-shot checkpoint, then one or more fine-tuned ones")
    check_folder(folder, "--reports-dir")
    pairs = [Inputs.of({"zero_shot": paths[0], "fine_tuned": ft}, inputs) for ft in paths[1:]]
    outputs = [("-o", output), ("--reports-dir", folder)]
    check_paths(
        [*outputs, ("--data-cache", sweep.run.data.cache_dir)],
        [item for pair in pairs for item in files_read(pair, sweep.run, reads)],
    )
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
    return pairs


def report_of(
    analysis: Analysis,
    workspace: Workspace,
    path: Path,
    resume: bool,
    progress: Progress | None,
    say: Say | None,
) -> dict:
    """The report at ``path`` when it was made from these inputs with these options, else
    the analysis run now (and written to ``path`` by the main process)."""
    expected = json.loads(
        json.dumps({"inputs": workspace.inputs(), "config": analysis.config(workspace)})
    )
    if path.exists():
        try:
            doc = read_report(path, analysis.command, complete=True)
        except ReportError:
            doc = None
        if doc is not None and all(doc.get(k) == v for k, v in expected.items()):
            _say(say, f"{path}: made with these inputs and options; not recomputed")
            return doc
        _say(say, f"{path}: made with other inputs or options; recomputing")
    report = run(analysis, workspace, output=path, resume=resume, progress=progress)
    return json.loads(report.to_json())


def _say(say: Say | None, text: str) -> None:
    if say is not None and is_main():
        say(text)


def relative_changes(workspace: Workspace) -> dict[str, float]:
    """||θ_ft − θ_zs|| / ||θ_zs|| over the whole model and over each tower (image, text)."""
    zero_shot, fine_tuned = workspace.checkpoints["zero_shot"], workspace.checkpoints["fine_tuned"]
    groups = layer_groups(fine_tuned.tensors)
    keys = {"relative_change": [k for ks in groups.values() for k in ks]}
    for tower in ("image", "text"):
        keys[f"relative_change_{tower}"] = [
            k for layer, ks in groups.items() if tower_of(layer) == tower for k in ks
        ]
    return {name: relative_change(zero_shot, fine_tuned, ks) for name, ks in keys.items() if ks}

"""One library call per command: ``run(analysis, workspace)`` owns the whole life of a run.

An :class:`Analysis` says what a command measures: its config (every option that affects
the numbers), its points (see ``engine.py``), and how their metrics become the report's
results and summary. :func:`run` does the rest, the same way for every command: the report
path checked before any work, the journal behind ``--resume``, the engine, restoring the
working model exactly (also on error or Ctrl-C), timing, the :class:`Report`, written
atomically, and the journal removed once it is.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ..options import RunOptions
from ..progress import Progress
from ..reports.report import Report
from . import distributed
from .engine import Engine, Point
from .journal import Journal
from .outputs import Paths, check_report, checkpoint_inputs, run_files
from .workspace import Inputs, Workspace


class Analysis(ABC):
    """What one command measures; subclasses are frozen dataclasses of their options."""

    command: ClassVar[str]
    options: RunOptions  # data, evaluation and path options

    def check(self, workspace: Workspace) -> None:
        """Refuse options that do not fit this workspace, before any work (default: none)."""
        return None

    @abstractmethod
    def config(self, workspace: Workspace) -> dict[str, Any]:
        """The report's ``config``: every option that affects the numbers."""

    def points(self, workspace: Workspace) -> list[Point]:
        """The points the engine evaluates (analyses that override ``measure`` need none)."""
        raise NotImplementedError

    def measure(self, workspace: Workspace, engine: Engine) -> Any:
        """The metrics behind the report: by default, every point on every dataset."""
        return engine.evaluate(self.points(workspace), label=self.command)

    @abstractmethod
    def summarize(self, workspace: Workspace, measured: Any) -> tuple[dict, dict]:
        """``(results, summary)`` of the report, from what ``measure`` returned."""


def run(
    analysis: Analysis,
    workspace: Workspace | Inputs,
    *,
    output: str | Path | None = None,
    journal: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    reads: Paths = (),
) -> Report:
    """Run ``analysis`` on ``workspace`` and return its report.

    Args:
        analysis: what to measure (``Interpolation``, ``Layerwise``, ``Sharpness``, ...).
        workspace: the checkpoints, the working model and the datasets (``open_workspace``),
            or the ``Inputs`` to open them from (every input checked before any work).
        output: the report's file, as ``-o`` takes it: before any work, refused when it
            cannot be written or is one of the run's inputs (the checkpoints, the datasets
            of ``Inputs``, the files the options name, ``reads``); its journal
            (``OUTPUT.partial``) kept as the run goes; the report written atomically on the
            main process at the end.
        journal: without ``output``, a file recording progress at every block of images
            (see ``journal.py``).
        resume: continue from an existing journal written by the same run.
        progress: called with a :class:`clipsharp.progress.Event` as the run goes.
        reads: other files the run reads (``(what, path)``), which no output may be: the
            command line names its config file here.

    The outputs (``output``, the ``--data-cache``) are checked against the inputs before
    any work, also without ``output`` (unless a ``journal`` is given instead). The working
    model holds its checkpoint again afterwards, bit for bit. The journal is removed once
    the report is made (and written, with ``output``).
    """
    if output is not None or journal is None:
        journal = journal_of(analysis.options, workspace, output, resume, reads)
    return run_checked(
        analysis, workspace, journal, output=output, resume=resume, progress=progress
    )


def run_checked(
    analysis: Analysis,
    workspace: Workspace | Inputs,
    journal: Path | None,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> Report:
    """:func:`run`, its paths already checked: ``journal`` is what :func:`journal_of` gave
    (an analysis that reads a file of its own checks first, then reads it, then runs)."""
    started = time.perf_counter()
    if isinstance(workspace, Inputs):
        workspace = workspace.open(analysis.options.data, analysis.options.eval, progress)
    analysis.check(workspace)
    inputs, config = workspace.inputs(), analysis.config(workspace)
    identity = {"command": analysis.command, "inputs": inputs, "config": config}
    record = Journal(journal, identity, resume=resume) if journal else None
    batch_size = analysis.options.eval.batch_size
    engine = workspace.engine(batch_size, journal=record, progress=progress)
    with workspace.restoring():
        measured = analysis.measure(workspace, engine)
    results, summary = analysis.summarize(workspace, measured)
    report = Report(
        command=analysis.command,
        inputs=inputs,
        config=config,
        results=results,
        summary=summary,
        seconds=time.perf_counter() - started,
    )
    write_report(report, output)
    if record is not None:
        record.close()  # on every rank: its sums are in the report now
    return report


def write_report(report: Report, output: str | Path | None) -> None:
    """Write ``report`` to ``output`` (atomically), on the main process; None or ``-``: not
    written (the command line prints it)."""
    if output not in (None, "-") and distributed.is_main():
        report.write(Path(output))


def journal_of(
    options: RunOptions,
    workspace: Workspace | Inputs,
    output: str | Path | None,
    resume: bool,
    reads: Paths = (),
) -> Path | None:
    """Before any work: the journal of a run writing its report to ``output`` (None: none),
    once the outputs (``output``, the ``--data-cache``) are checked against what the run
    reads (:func:`clipsharp.core.outputs.check_report`, :func:`files_read`)."""
    read = files_read(workspace, options, reads)
    return check_report(output, resume, read, [("--data-cache", options.data.cache_dir)])


def files_read(workspace: Workspace | Inputs, options: RunOptions, reads: Paths = ()) -> list:
    """``(what, path)`` of what a run reads: the checkpoints (and the architecture beside
    each), ``reads``, the datasets of ``Inputs``, the files the options name, the
    ``--model`` config."""
    if isinstance(workspace, Inputs):
        paths, specs, model = workspace.checkpoints, workspace.specs, workspace.model
    else:
        paths, specs, model = {r: c.path for r, c in workspace.checkpoints.items()}, (), None
    ids = [spec.text for spec in specs if spec.role == "id"]
    oods = [spec.text for spec in specs if spec.role == "ood"]
    return [*checkpoint_inputs(paths), *reads, *run_files(ids, oods, model, options)]


def run_config(workspace: Workspace, options: RunOptions) -> dict:
    """The report's ``config``: every option that affects the numbers."""
    return {
        "seed": options.data.seed,
        "limit": options.data.limit,
        "batch_size": options.eval.batch_size,
        "device": str(workspace.device),
        "precision": options.eval.precision,
        "templates": None if workspace.classifier.head else options.eval.templates or "openai",
        "head": "zero-shot" if workspace.classifier.head is None else "stored",
        "head_classnames": workspace.heads.head_classnames,
        "subset_logits": options.eval.subset_logits,
        "head_mapping": {
            d.name: workspace.heads.plan(d.classnames, d.classes.imagenet).how
            for d in workspace.datasets
        },
        "exclude": options.path.exclude,
        "extrapolate": options.path.extrapolate,
        "failure_threshold": options.path.failure_threshold,
        "world_size": distributed.world_size(),
    }

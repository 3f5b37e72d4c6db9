"""Human output on stderr (rich), reports on stdout or to a file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console, ConsoleOptions, RenderableType, RenderHook
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table

from ..errors import ClipsharpError
from ..options import InputOptions, RunOptions
from ..printable import printable
from ..reports.gates import tripped
from ..reports.report import Report

HUB_CONFIG = "open_clip_config.json"  # the architecture open_clip keeps beside its weights


def console() -> Console:
    """The stderr console; rich drops colour when stderr is no terminal or NO_COLOR is set.

    Off a terminal (CI logs, pipes), tables get room enough not to be truncated. Whatever
    it prints shows control characters as escapes (:func:`printable`).
    """
    out = Console(stderr=True, highlight=False)
    out.push_render_hook(Printable())
    if not out.is_terminal:
        out.width = max(out.width, 132)
    return out


class Printable(RenderHook):
    """Renders each renderable a console prints with its text :func:`printable` (rich's own
    control codes, cursor moves and styles, are kept)."""

    def process_renderables(self, renderables: list) -> list:
        return [_Printed(renderable) for renderable in renderables]


@dataclass(frozen=True)
class _Printed:
    inner: RenderableType

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for segment in console.render(self.inner, options):
            if segment.control:
                yield segment
            else:
                yield Segment(printable(segment.text, lines=True), segment.style)


def check_output(output: str | None, flag: str = "-o") -> Path | None:
    """Refuse, before any work, a report path that cannot be written.

    Returns the report path, or None when the report goes to stdout. Whether it is
    also an input is :func:`guard`'s job.
    """
    from ..files import check_writable, is_stream

    if output is None or output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ClipsharpError(f"{flag} {output} is a folder; give a file name")
    check_writable(path, flag)
    if is_stream(path):  # written into as it is (see clipsharp.files.write_atomic)
        if not os.access(path, os.W_OK):
            raise ClipsharpError(f"{flag} {output} is not writable")
        return path
    if not path.parent.is_dir():
        raise ClipsharpError(
            f"{flag} {output}: folder {path.parent} does not exist; create it first"
        )
    if not os.access(path.parent, os.W_OK):
        raise ClipsharpError(f"{flag} {output}: folder {path.parent} is not writable")
    return path


def check_folder(folder: Path, flag: str) -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        raise ClipsharpError(f"{flag} {folder} is a file, not a folder; choose a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ClipsharpError(
            f"{flag} {folder}: {existing} is not writable; choose a folder you can write to"
        )


Paths = Sequence[tuple[str, "str | Path | None"]]  # (flag or what, path), None: not given


def guard(outputs: Paths, inputs: Paths) -> None:
    """Refuse an output that is, or lies inside, an input of the run or the config file.

    Every command calls this before any work (see :func:`clipsharp.files.check_outputs`).
    """
    from ..files import check_name_lengths, check_outputs, is_stream, journal_path
    from .config_file import find_config

    check_name_lengths(outputs)
    found = find_config(Path.cwd())
    config = [("the config file", found[0])] if found else []
    journals = [  # a report's --resume journal is written beside it (never beside a stream)
        (f"the journal of {flag}", journal_path(Path(path)))
        for flag, path in outputs
        if flag == "-o" and path not in (None, "-") and not is_stream(path)
    ]
    check_outputs([*outputs, *journals], [*inputs, *config])


def checkpoint_inputs(checkpoints: Mapping[str, str | Path | None]) -> list:
    """``(what, path)`` of each checkpoint by role, and the open_clip_config.json beside it."""
    found = []
    for role, path in checkpoints.items():
        if path is None:
            continue
        what = f"the {role.replace('_', '-')} checkpoint"
        found += [(what, path), (f"the architecture of {what}", Path(path).parent / HUB_CONFIG)]
    return found


def dataset_inputs(flag: str, specs: Sequence[str]) -> list:
    """``(what, path)`` of the local files and folders behind ``--id`` / ``--ood`` specs.

    A spec is ``SOURCE[:SPLIT]``: both readings are taken, as either may be the path;
    a glob stands for the folder before its first wildcard.
    """
    from ..data.specs import GLOB_CHARS, local_path

    found = []
    for text in specs:
        for source in {text, text.rsplit(":", 1)[0]}:
            path = local_path(source)
            if GLOB_CHARS.search(source):
                kept = list(_until_glob(path.parts))
                path = Path(*kept) if kept else Path(".")
            found.append((f"the {flag} dataset", path))
    return found


def _until_glob(parts: Sequence[str]) -> Iterator[str]:
    from ..data.specs import GLOB_CHARS

    for part in parts:
        if GLOB_CHARS.search(part):
            return
        yield part


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise them (:class:`Terminated` for
    SIGTERM): files written together are all written."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame):
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    live = [sig for sig in caught if previous[sig] is not signal.SIG_IGN]
    if signal.SIGTERM in live:
        raise Terminated
    if live:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI runners and ``timeout`` send), raised where Ctrl-C would be: the same
    clean-up runs (temporary files removed, the ``--resume`` journal kept); exit 143."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def run_files(inputs: InputOptions, run: RunOptions) -> list:
    """``(what, path)`` of every file and folder the shared options make a run read."""
    from ..data.imagenet import LISTS
    from ..options import TEMPLATE_SETS

    def file(value: str | None, named: tuple[str, ...]) -> str | None:
        return None if value in named else value

    return [
        *dataset_inputs("--id", [inputs.id] if inputs.id else []),
        *dataset_inputs("--ood", inputs.ood),
        ("the --classnames file", file(run.data.classnames, LISTS)),
        ("the --templates file", file(run.eval.templates, TEMPLATE_SETS)),
        ("the --head-classnames file", file(run.eval.head_classnames, LISTS)),
        ("the --model config", inputs.model),
    ]


def guard_run(
    output: str | None,
    resume: bool,
    checkpoints: Mapping[str, str | Path | None],
    inputs: InputOptions,
    run: RunOptions,
    *,
    outputs: Paths = (),
    read: Paths = (),
) -> Path | None:
    """Before any work: the report path can be written and no output is an input (the
    checkpoints, the datasets, the files the options name, ``read``). Returns the journal
    of ``--resume`` (None when the report goes to stdout)."""
    journal = check_resume(resume, check_output(output))
    guard(
        [("-o", output), *outputs, ("--data-cache", run.data.cache_dir)],
        [*checkpoint_inputs(checkpoints), *read, *run_files(inputs, run)],
    )
    return journal


def reading(checkpoints: Mapping[str, str | Path], inputs: InputOptions):
    """The ``Inputs`` of a run on these checkpoints and the --id / --ood datasets."""
    from ..core.workspace import Inputs
    from ..data.specs import dataset_specs

    return Inputs(
        {role: Path(path) for role, path in checkpoints.items()}, dataset_specs(inputs),
        model=inputs.model, allow_nonfinite=inputs.allow_nonfinite,
    )  # fmt: skip


def check_resume(resume: bool, output: Path | None) -> Path | None:
    """The journal file of a run written to ``output`` (None when the report goes to stdout,
    a character device or a FIFO)."""
    from ..files import is_stream, journal_path, special_file

    if resume and output is None:
        raise ClipsharpError("--resume needs -o FILE: the journal of the run sits beside it")
    if output is not None and is_stream(output):
        if resume:
            raise ClipsharpError(
                f"--resume needs -o FILE, a regular file: -o {output} is "
                f"{special_file(output)}, beside which no journal is kept"
            )
        return None
    return journal_path(output) if output else None


def gate(report: Report, fail_on: str | None, out: Console) -> None:
    """Exit 1 when the ``--fail-on`` condition holds (after the report is written)."""
    if not fail_on:
        return
    failing = tripped(report.summary, fail_on)
    if failing:
        out.print(f"--fail-on {fail_on}: {', '.join(failing)}")
        raise typer.Exit(1)


def finish(
    report: Report,
    summary: RenderableType,
    output: str | None,
    out: Console,
    journal: Path | None = None,
    flag: str = "-o",
    form: str = "table",
) -> None:
    """Show the summary and write the report, on the main process only.

    The report goes to ``output`` (a file, written atomically) or to stdout: with
    ``-o -``, or with no ``-o`` when stdout is not a terminal (a pipe or a file).
    At a terminal without ``-o``, only the summary is shown. ``form`` is the
    ``--format``: ``table`` (rich, on stderr), ``json`` (the report on stdout) or
    ``md`` (the summary as a GitHub markdown table on stdout).
    """
    from ..core.distributed import is_main

    if not is_main():
        return
    for line in class_notes(report.to_dict()):
        out.print(f"[dim]note:[/] {escape(line)}", soft_wrap=True)
    dataset_notes(report, out)
    if form == "md":
        to_stdout(markdown(summary))
    elif form == "table":
        out.print(summary)
    piped = output is None and stdout_is_piped() and form != "md"
    printed = form == "json" or output == "-" or piped
    if printed:
        to_stdout(report.to_json())
    if output not in (None, "-"):
        report.write(Path(output))
        out.print(f"report written to {output}")
    elif not printed:
        out.print(f"[dim]pass {flag} FILE to save the JSON report[/dim]")
    if journal:
        journal.unlink(missing_ok=True)


def class_notes(doc: dict) -> list[str]:
    """One line per dataset whose class names are not its own (ImageNet's, a list), and per
    dataset mapped onto a stored head by an assumed order."""
    config = doc.get("config") or {}
    mapping = config.get("head_mapping") or {}
    notes = []
    for entry in (doc.get("inputs") or {}).get("datasets", []):
        name, source = entry.get("name"), entry.get("class_names") or ""
        if source.startswith(("imagenet", "--classnames imagenet")):
            notes.append(f"{name}: class names {source}: CLIP's names of ImageNet's classes")
        if "assumed" in mapping.get(name, ""):
            notes.append(f"{name}: stored head: {mapping[name]}")
    return notes


def dataset_notes(report: Report, out: Console) -> None:
    """What opening the datasets found (empty class folders, images left out), on stderr."""
    from rich.markup import escape

    for entry in report.inputs.get("datasets", []):
        name = escape(str(entry.get("name")))
        for note in entry.get("notes", []):
            out.print(f"[yellow]note:[/] {name}: {escape(note)}")
        skipped = entry.get("skipped_images")
        if skipped:
            out.print(
                f"[yellow]note:[/] {name}: {skipped['count']} images cannot be read and are "
                f"left out (--skip-bad-images), first: {escape(skipped['first'][0])}"
            )


def stdout_is_piped() -> bool:
    """Whether stdout is open and not a terminal (a pipe or a file)."""
    return sys.stdout is not None and not sys.stdout.isatty()


def check_stdout(values: Mapping[str, object]) -> None:
    """Before any work: refuse output for a closed stdout (``>&-``), and two things printed
    on one stdout (``--format md -o -``). ``values`` are a command's options by name."""
    dashes = [flag for flag, name in (("-o", "output"), ("--report", "report"))
              if values.get(name) == "-"]  # fmt: skip
    form = values.get("format")
    printing = [f"{flag} -" for flag in dashes] + ([f"--format {form}"] if form in PRINTED else [])
    if printing and sys.stdout is None:
        raise ClipsharpError(
            f"{printing[0]} prints to stdout, which is closed; give -o FILE or open stdout"
        )
    if form == "md" and dashes:
        raise ClipsharpError(
            f"--format md and {dashes[0]} - would both print to stdout; give {dashes[0]} FILE "
            "for the report, or drop one of them"
        )


PRINTED = ("json", "md")  # the --format values that print on stdout


def to_stdout(text: str) -> None:
    """Print ``text`` (:func:`printable`, newlines kept) on stdout. A reader that went away
    (``| head``, ``| true``) is no error: the rest of stdout is dropped and the run goes on,
    its files written, its exit code kept. Any other failure (``> /dev/full``) is an error
    that names stdout."""
    try:
        sys.stdout.write(printable(text, lines=True))
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
    except OSError as e:
        _drop_stdout()
        raise ClipsharpError(
            f"cannot write to stdout ({e.strerror or e}); give -o FILE, or free the device "
            "stdout goes to"
        ) from e


def _drop_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so that what is written or flushed later (at
    exit too) cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test captures it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def hold_closed_streams() -> None:
    """Open /dev/null on stdin, stdout or stderr where it was closed (``>&-``), so no file the
    run opens gets that descriptor, and stray writes to it go nowhere. ``sys.stdout`` stays
    None, which :func:`check_stdout` reads as closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def markdown(renderable: RenderableType) -> str:
    """GitHub-flavoured markdown of a rich Table (or of each table in a Group)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if isinstance(renderable, Group):
        return "\n".join(markdown(part) for part in renderable.renderables)
    if not isinstance(renderable, Table):
        return Text.from_markup(str(renderable)).plain + "\n"

    def plain(cell) -> str:
        text = Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)
        return text.replace("|", "\\|")

    lines = [f"**{plain(renderable.title)}**", ""] if renderable.title else []
    columns = renderable.columns
    lines.append("| " + " | ".join(plain(c.header) for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in columns) + "|")
    for row in zip(*(c.cells for c in columns), strict=True):
        lines.append("| " + " | ".join(plain(cell) for cell in row) + " |")
    if renderable.caption:
        lines += ["", plain(renderable.caption)]
    return "\n".join(lines) + "\n"


@contextmanager
def progress_bars(out: Console) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(task, done, total)`` callback: live bars at a terminal, else sparse lines.

    Under torchrun only rank 0 shows progress (``RANK`` is set before the process group is).
    Each bar shows the task and the point it evaluates, the share done, the count and its
    rate (analyses count image-evaluations: images x points), the time spent and the time
    left. A step without a count (``total`` 0) shows a spinner until it ends.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield lambda task, done, total: None
        return
    if not out.is_terminal:
        yield PlainProgress(out)
        return
    from rich.progress import SpinnerColumn

    with Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
        expand=True,
    ) as bars:
        yield LiveProgress(bars)


def unit(label: str) -> str:
    """What a task's count counts."""
    if label == "zero-shot head":
        return "classes"
    if label in ("pretrain", "worst-case ascent") or label.startswith("fine-tune"):
        return "steps"
    return "evals"  # image-evaluations: an image at one point


def point_text(point: str) -> str:
    """A point's key as progress shows it: ``0.5`` -> ``α=0.5``, ``visual.block.3@0.5`` ->
    ``visual.block.3 α=0.5``, ``alpha=0.5/rho=0.1/draw=3`` -> ``α=0.5 ρ=0.1 draw 3``."""
    import re

    number = r"-?[0-9.]+(e[+-]?[0-9]+)?"
    if re.fullmatch(number, point):
        return f"α={point}"
    layer, at, alpha = point.rpartition("@")
    if at and re.fullmatch(number, alpha):
        return f"{layer} α={alpha}"
    text = point.replace("alpha=", "α=").replace("rho=", "ρ=").replace("draw=", "draw ")
    return " ".join(part for part in text.split("/") if part)


def _short(number: float) -> str:
    """``1234567`` -> ``1.2M``: counts and rates in a few characters."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{suffix}"
    return f"{number:.0f}" if number >= 10 or number == int(number) else f"{number:.1f}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


@dataclass
class _Run:
    """One run of a task: when it started, from which count, and what was last shown."""

    started: float
    first: int  # the count it started from (a resumed run starts past 0)
    done: int
    countless: bool  # a step without a count
    shown_at: float  # when its last line was shown
    shown_share: float = 0.0
    loud: bool = True  # its start was shown, so its end is too

    def status(self, label: str, done: int, total: int, now: float, clock: bool = False) -> str:
        """``45% 41.2k/110k evals, 1.2k evals/s, eta 0:00:30`` (``clock``: with the time
        spent before the eta)."""
        what, spent = unit(label), now - self.started
        counted = done - self.first
        speed = counted / spent if spent > 0 and counted > 0 else None
        text = f"{100 * done / total:3.0f}% {_short(done)}/{_short(total)} {what}"
        text += f", {_clock(spent)} elapsed" if clock else ""
        if speed is None:
            return text
        text += f", {_short(speed)} {what}/s" if speed >= 1 else f", {1 / speed:.0f} s/{what[:-1]}"
        return text + (f", eta {_clock((total - done) / speed)}" if done < total else "")


def _starts(run: _Run | None, done: int, total: int) -> bool:
    """A new run of a task: its first call, a call after its run finished (a head of ten
    classes reports only 10/10), a count that went back, or a step without one."""
    if run is None or total == 0:
        return True
    return done < run.done or (not run.countless and run.done >= total)


class LiveProgress:
    """Rich bars at a terminal, one per task label; a task that starts again resets its bar."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.ids: dict[str, int] = {}
        self.runs: dict[str, _Run] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        from rich.markup import escape

        from ..progress import split_task

        label, point = split_task(task)
        now = time.monotonic()
        run = self.runs.get(label)
        if _starts(run, done, total):
            self.runs[label] = run = _Run(now, done, done, total == 0, now)
            if label in self.ids:
                self.bars.reset(self.ids[label], total=total or None)
            else:
                self.ids[label] = self.bars.add_task(label, total=total or None, count="")
        run.done = done
        label, point = escape(printable(label)), escape(printable(point_text(point)))
        shown = f"{label} [dim]{point}[/]" if point else label
        count = "" if run.countless or not total else run.status(label, done, total, now)
        self.bars.update(
            self.ids[label], description=shown, completed=done, total=total or None, count=count
        )


class PlainProgress:
    """Progress as plain lines, for logs: a task's start and end, and between them a line
    when 10 s have passed, or 10 % more is done and 1 s has passed, since its last line. A
    step without a count gets one line at its end, when it took a second or more.

    A task that starts again within 10 s of its last line (a head re-encoded at every
    draw) is not announced again, so a log holds at most about a line a second per task.
    """

    EVERY = 10.0  # seconds between lines of a task
    STEP = 0.1  # share of a task done that earns a line
    GAP = 1.0  # seconds at least between the lines of a task, but its first and last

    def __init__(self, out: Console) -> None:
        self.out = out
        self.runs: dict[str, _Run] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        from ..progress import split_task

        label, point = split_task(task)
        now = time.monotonic()
        run = self.runs.get(label)
        if _starts(run, done, total):
            loud = run is None or now - run.shown_at >= self.EVERY
            self.runs[label] = run = _Run(now, done, done, total == 0, now, loud=loud)
            if loud and total:  # a step without a count is told when it ends
                self._say(label, point, done, total, run, now)
            return
        run.done = done
        share = done / total if total else 1.0
        finished = done >= total
        since = now - run.shown_at
        due = since >= self.EVERY or (since >= self.GAP and share - run.shown_share >= self.STEP)
        if run.countless:  # said at its end, unless quick
            if now - run.started >= self.GAP:
                self._say(label, point, done, total, run, now)
            return
        if (finished and run.loud) or due:
            run.shown_at, run.shown_share, run.loud = now, share, run.loud and not finished
            self._say(label, point, done, total, run, now)

    def _say(self, label: str, point: str, done: int, total: int, run: _Run, now: float) -> None:
        if run.countless:
            text = f"{label}: done in {now - run.started:.1f} s"
        else:
            at = f" at {point_text(point)}" if point else ""
            text = f"{label}: {run.status(label, done, total, now, clock=True)}{at}"
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def summary_table(title: str, names: Sequence[str], numbers: Sequence[str]) -> Table:
    """A summary table that fits an 80-column terminal without cutting a number.

    No side borders; the ``names`` columns (dataset, layer) fold a long name over two
    lines, the ``numbers`` columns right-align and never wrap.
    """
    from rich import box

    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=0, show_edge=False, title_justify="left"
    )
    for header in names:
        table.add_column(header, overflow="fold")
    for header in numbers:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}"

"""Human output on stderr (rich), reports on stdout or to a file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ClipsharpError
from ..report import Report
from ..summary import tripped

HUB_CONFIG = "open_clip_config.json"  # the architecture open_clip keeps beside its weights


def console() -> Console:
    """The stderr console; rich drops colour when stderr is no terminal or NO_COLOR is set.

    Off a terminal (CI logs, pipes), tables get room enough not to be truncated.
    """
    out = Console(stderr=True, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 132)
    return out


def check_output(output: str | None, flag: str = "-o") -> Path | None:
    """Refuse, before any work, a report path that cannot be written.

    Returns the report path, or None when the report goes to stdout. Whether it is
    also an input is :func:`guard`'s job.
    """
    if output is None or output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ClipsharpError(f"{flag} {output} is a folder; give a file name")
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
    from ..files import check_outputs
    from .config_file import find_config

    found = find_config(Path.cwd())
    config = [("the config file", found[0])] if found else []
    check_outputs(outputs, [*inputs, *config])


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
    from ..sources import GLOB_CHARS, local_path

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
    from ..sources import GLOB_CHARS

    for part in parts:
        if GLOB_CHARS.search(part):
            return
        yield part


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise it: files written together are all written."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous is not signal.SIG_IGN:
        raise KeyboardInterrupt


def check_resume(resume: bool, output: Path | None) -> Path | None:
    """The journal file of a run written to ``output`` (None when the report goes to stdout)."""
    if resume and output is None:
        raise ClipsharpError("--resume needs -o FILE: the journal of the run sits beside it")
    from ..journal import journal_path

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
    from ..distributed import is_main

    if not is_main():
        return
    if form == "md":
        sys.stdout.write(markdown(summary))
    elif form == "table":
        out.print(summary)
    piped = output is None and not sys.stdout.isatty() and form != "md"
    to_stdout = form == "json" or output == "-" or piped
    if to_stdout:
        sys.stdout.write(report.to_json())
        sys.stdout.flush()
    if output not in (None, "-"):
        report.write(Path(output))
        out.print(f"report written to {output}")
    elif not to_stdout:
        out.print(f"[dim]pass {flag} FILE to save the JSON report[/dim]")
    if journal:
        journal.unlink(missing_ok=True)


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
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield lambda task, done, total: None
        return
    if out.is_terminal:
        with Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        ) as bars:
            tasks: dict[str, int] = {}

            def update(task: str, done: int, total: int) -> None:
                if task not in tasks:
                    tasks[task] = bars.add_task(task, total=total)
                bars.update(tasks[task], completed=done, total=total)

            yield update
        return
    yield _plain_progress(out)


def _plain_progress(out: Console) -> Callable[[str, int, int], None]:
    """One line per task at most every 5 seconds, and at the end of each task."""
    last: dict[str, float] = {}

    def update(task: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last.get(task, 0.0) >= 5.0:
            last[task] = now
            out.print(f"{task}: {done}/{total}")

    return update


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}"

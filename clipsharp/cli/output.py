"""Human output on stderr (rich), reports on stdout or to a file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ClipsharpError
from ..report import Report
from ..summary import tripped


def console() -> Console:
    """The stderr console; rich drops colour when stderr is no terminal or NO_COLOR is set.

    Off a terminal (CI logs, pipes), tables get room enough not to be truncated.
    """
    out = Console(stderr=True, highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 132)
    return out


def check_output(output: str | None, inputs: Sequence[Path | str]) -> Path | None:
    """Refuse, before any work, an output path that cannot be written or is an input.

    Returns the report path, or None when the report goes to stdout.
    """
    if output is None or output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ClipsharpError(f"-o {output} is a folder; give a file name for the report")
    if not path.parent.is_dir():
        raise ClipsharpError(f"-o {output}: folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise ClipsharpError(f"-o {output}: folder {path.parent} is not writable")
    for given in inputs:
        if Path(given).resolve() == path.resolve():
            raise ClipsharpError(
                f"-o {output} is also an input; choose another path for the report"
            )
    return path


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

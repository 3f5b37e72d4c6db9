"""Human output on stderr (rich), reports on stdout or to a file."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console, ConsoleOptions, RenderableType, RenderHook
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table as RichTable

from ..core.outputs import Paths, check_paths
from ..errors import ClipsharpError
from ..options import InputOptions
from ..printable import printable
from ..reports.gates import tripped
from ..reports.notes import class_notes, dataset_notes, warnings_of
from ..reports.report import Report
from ..reports.tables import Mark, Table, markdown, tables_of


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


def guard(outputs: Paths, inputs: Paths) -> None:
    """Refuse an output that is, or lies inside, an input of the command or the config file
    (:func:`clipsharp.core.outputs.check_paths`), before any work: for the commands whose
    library call does not check its outputs itself (the analyses, ``prune`` and ``study``
    do, handed :func:`config_read`)."""
    check_paths(outputs, [*inputs, *config_read()])


def config_read() -> list:
    """``(what, path)`` of the config file the command line read, if any."""
    from .config_file import find_config

    found = find_config(Path.cwd())
    return [("the config file", found[0])] if found else []


def analyse(
    run_analysis: Callable[..., Report],
    checkpoints: dict,
    inputs: InputOptions,
    *options: object,
    output: str | None,
    resume: bool,
    form: str,
) -> Report:
    """An analysis command after parsing: its one library call on these checkpoints and
    options (``run_interpolation``, ...), with progress shown, then :func:`finish`."""
    from ..core.workspace import Inputs
    from .progress import progress_bars

    out = console()
    with progress_bars(out) as progress:
        report = run_analysis(
            Inputs.of(checkpoints, inputs),
            *options,
            output=output,
            resume=resume,
            progress=progress,
            reads=config_read(),
        )
    finish(report, output, out, form=form, written=True)
    return report


def gate(report: Report, fail_on: str | None) -> None:
    """Exit 1 after the report is written when its ``--fail-on`` check fails on a value:
    check's --no-failure-mode or --no-collapse. What has nothing to judge (no OOD set,
    every layer unchanged) does not trip it."""
    failing = tripped(report.to_dict(), fail_on) if fail_on else []
    if failing:
        console().print(f"--fail-on {fail_on}: {', '.join(failing)}", markup=False)
        raise typer.Exit(1)


def finish(
    report: Report,
    output: str | None,
    out: Console,
    flag: str = "-o",
    form: str = "table",
    written: bool = False,
) -> None:
    """Show the summary (:func:`show_summary`) and write the report, on the main process only.

    The report goes to ``output`` (a file, written atomically, unless ``written``: the
    library's ``run`` wrote it) or to stdout: with ``-o -``, or with no ``-o`` when stdout
    is not a terminal (a pipe or a file). At a terminal without ``-o``, only the summary is
    shown. ``form`` is the ``--format``: ``table`` (rich, on stderr), ``json`` (the report on
    stdout) or ``md`` (the summary as a GitHub markdown table on stdout).
    """
    from ..core.distributed import is_main

    if not is_main():
        return
    show_summary(report.to_dict(), out, "" if form == "json" else form)
    piped = output is None and stdout_is_piped() and form != "md"
    printed = form == "json" or output == "-" or piped
    if printed:
        to_stdout(report.to_json())
    if output not in (None, "-"):
        if not written:
            report.write(Path(output))
        out.print(f"report written to {output}")
    elif not printed:
        out.print(f"[dim]pass {flag} FILE to save the JSON report[/dim]")


def show_summary(doc: dict, out: Console, form: str = "table", name: str = "the report") -> None:
    """A report's warnings and notes on stderr, then its summary tables: drawn on stderr
    (``table``), as markdown on stdout (``md``), or not at all (``""``)."""
    for line in warnings_of(doc):
        out.print(f"[yellow]warning:[/] {escape(line)}")
    for line in class_notes(doc):
        out.print(f"[dim]note:[/] {escape(line)}", soft_wrap=True)
    for line in dataset_notes(doc):
        out.print(f"[yellow]note:[/] {escape(line)}")
    if form == "md":
        to_stdout(markdown(tables_of(doc, name)))
    elif form == "table":
        for table in tables_of(doc, name):
            out.print(draw(table))


TONES = {"alarm": "bold red", "caution": "bold yellow", "good": "green", "strong": "bold"}


def draw(table: Table) -> RichTable:
    """A :class:`clipsharp.reports.tables.Table` as rich draws it: no side borders, the names
    columns folding a long name, the numbers columns right-aligned and never wrapped."""
    from rich import box

    def cell(value) -> str:
        if isinstance(value, Mark):
            return f"[{TONES[value.tone]}]{escape(value.text)}[/]"
        return escape(value)

    drawn = RichTable(
        title=escape(table.title),
        caption=escape(table.caption),
        caption_justify="left" if table.caption_left else "center",
        box=box.SIMPLE_HEAD,
        padding=0,
        show_edge=False,
        title_justify="left",
    )
    for header in table.names:
        drawn.add_column(escape(header), overflow="fold")
    for header in table.numbers:
        drawn.add_column(escape(header), justify="right", no_wrap=True)
    for row in table.rows:
        drawn.add_row(*map(cell, row))
    return drawn


def stdout_is_piped() -> bool:
    """Whether stdout is open and not a terminal (a pipe or a file)."""
    return sys.stdout is not None and not sys.stdout.isatty()


def check_stdout(values: Mapping[str, object]) -> None:
    """Before any work: refuse output for a closed stdout (``>&-``), and two things printed
    on one stdout (``--format md -o -``). ``values`` are a command's options by name."""
    dashes = [
        flag for flag, name in (("-o", "output"), ("--report", "report")) if values.get(name) == "-"
    ]
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

"""What a run shows while it goes: live bars at a terminal, the library's plain lines
(:class:`clipsharp.progress.PlainProgress`) in logs. Rendering only: the library reports
progress as :class:`clipsharp.progress.Event` calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from ..printable import printable
from ..progress import Event, PlainProgress, Progress, Run, starts


@contextmanager
def progress_bars(out: Console) -> Iterator[Progress]:
    """A :data:`~clipsharp.progress.Progress` callback: live bars at a terminal, else sparse
    lines.

    Under torchrun only the main process shows progress (:func:`distributed.is_main`).
    Each bar shows the task and the point it evaluates, the share done, the count and its
    rate (analyses count image-evaluations: images x points), the time spent and the time
    left. A step without a count (``total`` 0) shows a spinner until it ends.
    """
    from ..core.distributed import is_main

    if not is_main():
        yield lambda event: None
        return
    if not out.is_terminal:
        yield PlainProgress(
            lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True)
        )
        return
    from rich.progress import SpinnerColumn

    with Bars(
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


class LiveProgress:
    """Rich bars at a terminal, one per task label; a task that starts again resets its bar."""

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self.ids: dict[str, int] = {}
        self.runs: dict[str, Run] = {}

    def __call__(self, event: Event) -> None:
        from rich.markup import escape

        task, done, total = event.task, event.done, event.total
        label = escape(printable(task))
        point = escape(printable(str(event.point))) if event.point else ""
        shown = f"{label} [dim]{point}[/]" if point else label
        now = time.monotonic()
        run = self.runs.get(task)
        if starts(run, event):
            self.runs[task] = run = Run.start(event, now)
            if task in self.ids:
                self.bars.reset(self.ids[task], total=total or None)
            else:
                self.ids[task] = self.bars.add_task(shown, total=total or None, count="")
        run.done = done
        count = "" if run.countless or not total else run.status(event, now)
        self.bars.update(
            self.ids[task], description=shown, completed=done, total=total or None, count=count
        )

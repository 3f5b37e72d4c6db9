"""What a run shows while it goes: live bars at a terminal, sparse lines in logs. Rendering
only: the library reports progress as :class:`clipsharp.progress.Event` calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from ..printable import printable
from ..progress import Event, Progress


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
        yield PlainProgress(out)
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

    def status(self, event: Event, now: float, clock: bool = False) -> str:
        """``45% 41.2k/110k evals, 1.2k evals/s, eta 0:00:30`` (``clock``: with the time
        spent before the eta)."""
        what, done, total, spent = event.unit, event.done, event.total, now - self.started
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

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self.ids: dict[str, int] = {}
        self.runs: dict[str, _Run] = {}

    def __call__(self, event: Event) -> None:
        from rich.markup import escape

        label, point, done, total = event.task, event.point, event.done, event.total
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
        count = "" if run.countless or not total else run.status(event, now)
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

    def __call__(self, event: Event) -> None:
        label, done, total = event.task, event.done, event.total
        now = time.monotonic()
        run = self.runs.get(label)
        if _starts(run, done, total):
            loud = run is None or now - run.shown_at >= self.EVERY
            self.runs[label] = run = _Run(now, done, done, total == 0, now, loud=loud)
            if loud and total:  # a step without a count is told when it ends
                self._say(event, run, now)
            return
        run.done = done
        share = done / total if total else 1.0
        finished = done >= total
        since = now - run.shown_at
        due = since >= self.EVERY or (since >= self.GAP and share - run.shown_share >= self.STEP)
        if run.countless:  # said at its end, unless quick
            if now - run.started >= self.GAP:
                self._say(event, run, now)
            return
        if (finished and run.loud) or due:
            run.shown_at, run.shown_share, run.loud = now, share, run.loud and not finished
            self._say(event, run, now)

    def _say(self, event: Event, run: _Run, now: float) -> None:
        if run.countless:
            text = f"{event.task}: done in {now - run.started:.1f} s"
        else:
            at = f" at {point_text(event.point)}" if event.point else ""
            text = f"{event.task}: {run.status(event, now, clock=True)}{at}"
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

"""How the library reports progress: one event type, the callback that hears it, steps, and
plain lines for logs (:class:`PlainProgress`), the policy of when a line is due and what it
says. The CLI draws live bars at a terminal from the same events (``clipsharp.cli.progress``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .printable import printable


@dataclass(frozen=True)
class Where:
    """Where a point lies, in the paper's coordinates: the fields it has, shown in this
    order (``str``: ``α=0.5``, ``visual.block.3 α=0.5``, ``fine_tuned visual.block.0 ρ=1.0
    draw 2``)."""

    name: str = ""  # a model or a point without coordinates: "fine_tuned", "background", "best"
    layer: str = ""  # the layer group that moves (layerwise) or is perturbed (stragglers)
    alpha: float | None = None  # on the path from the zero-shot (0) to the fine-tuned model (1)
    rho: float | None = None  # the size of a sharpness perturbation
    draw: int | None = None  # which noise draw of an average sharpness

    def __str__(self) -> str:
        parts = [self.name, self.layer]
        parts.append("" if self.alpha is None else f"α={self.alpha!r}")
        parts.append("" if self.rho is None else f"ρ={self.rho!r}")
        parts.append("" if self.draw is None else f"draw {self.draw}")
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class Event:
    """Where a task stands: ``done`` of ``total`` ``unit`` (``total`` 0: a step without a
    count, see :func:`step`), and where the point it evaluates lies (None when none).
    Counts of the analyses are image-evaluations (images x points)."""

    task: str  # "interpolate", "zero-shot head", "pretrain", ...
    done: int
    total: int
    unit: str = "evals"  # "evals" (an image at one point), "classes", "steps"
    point: Where | None = None


# progress(event): PlainProgress, the CLI's bars (clipsharp.cli.progress), or any callable
Progress = Callable[[Event], None]


@contextmanager
def step(progress: Progress | None, task: str) -> Iterator[None]:
    """Report a step without a count: ``done`` 0 of 0 as it starts, 1 of 1 at its end."""
    if progress is None:
        yield
        return
    progress(Event(task, 0, 0, unit="steps"))
    yield
    progress(Event(task, 1, 1, unit="steps"))


def short(number: float) -> str:
    """``1234567`` -> ``1.2M``: counts and rates in a few characters."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{suffix}"
    return f"{number:.0f}" if number >= 10 or number == int(number) else f"{number:.1f}"


def clock(seconds: float) -> str:
    """``90.4`` -> ``0:01:30``: a time spent or left, to the second."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


@dataclass
class Run:
    """One run of a task: when it started, from which count, and what was last shown."""

    started: float
    first: int  # the count it started from (a resumed run starts past 0)
    done: int
    countless: bool  # a step without a count
    shown_at: float  # when its last line was shown
    shown_share: float = 0.0
    loud: bool = True  # its start was shown, so its end is too

    @classmethod
    def start(cls, event: Event, now: float, loud: bool = True) -> Run:
        return cls(now, event.done, event.done, event.total == 0, now, loud=loud)

    def status(self, event: Event, now: float, elapsed: bool = False) -> str:
        """``45% 41.2k/110k evals, 1.2k evals/s, eta 0:00:30`` (``elapsed``: with the time
        spent before the rate)."""
        what, done, total, spent = event.unit, event.done, event.total, now - self.started
        counted = done - self.first
        speed = counted / spent if spent > 0 and counted > 0 else None
        text = f"{100 * done / total:3.0f}% {short(done)}/{short(total)} {what}"
        text += f", {clock(spent)} elapsed" if elapsed else ""
        if speed is None:
            return text
        text += f", {short(speed)} {what}/s" if speed >= 1 else f", {1 / speed:.0f} s/{what[:-1]}"
        return text + (f", eta {clock((total - done) / speed)}" if done < total else "")


def starts(run: Run | None, event: Event) -> bool:
    """A new run of a task: its first call, a call after its run finished (a head of ten
    classes reports only 10/10), a count that went back, or a step without one."""
    if run is None or event.total == 0:
        return True
    return event.done < run.done or (not run.countless and run.done >= event.total)


def _stderr(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)


class PlainProgress:
    """Progress as plain lines, for logs: a task's start and end, and between them a line
    when 10 s have passed, or 10 % more is done and 1 s has passed, since its last line. A
    step without a count gets one line at its end, when it took a second or more.

    A task that starts again within 10 s of its last line (a head re-encoded at every
    draw) is not announced again, so a log holds at most about a line a second per task.
    Each line goes to ``say`` (default: stderr, control characters escaped).

    Example:
        >>> run_interpolation(inputs, options, progress=PlainProgress())  # doctest: +SKIP
        interpolate:  40% 44.0k/110.0k evals, 0:00:36 elapsed, 1.2k evals/s, eta 0:00:54 at α=0.4
    """

    EVERY = 10.0  # seconds between lines of a task
    STEP = 0.1  # share of a task done that earns a line
    GAP = 1.0  # seconds at least between the lines of a task, but its first and last

    def __init__(self, say: Callable[[str], None] = _stderr) -> None:
        self.say = say
        self.runs: dict[str, Run] = {}

    def __call__(self, event: Event) -> None:
        done, total = event.done, event.total
        now = time.monotonic()
        run = self.runs.get(event.task)
        if starts(run, event):
            loud = run is None or now - run.shown_at >= self.EVERY
            self.runs[event.task] = run = Run.start(event, now, loud=loud)
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

    def _say(self, event: Event, run: Run, now: float) -> None:
        if run.countless:
            self.say(f"{event.task}: done in {now - run.started:.1f} s")
        else:
            where = str(event.point) if event.point else ""
            at = f" at {where}" if where else ""
            self.say(f"{event.task}: {run.status(event, now, elapsed=True)}{at}")

"""How the library reports progress: one event type, the callback that hears it, and steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """Where a task stands: ``done`` of ``total`` ``unit`` (``total`` 0: a step without a
    count, see :func:`step`), and the point it evaluates (``"0.5"``, ``"visual.block.3@0.5"``;
    ``""`` when none). Counts of the analyses are image-evaluations (images x points)."""

    task: str  # "interpolate", "zero-shot head", "pretrain", ...
    done: int
    total: int
    unit: str = "evals"  # "evals" (an image at one point), "classes", "steps"
    point: str = ""


# progress(event), drawn by the CLI (clipsharp.cli.progress)
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

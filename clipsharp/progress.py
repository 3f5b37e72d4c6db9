"""How the library reports progress: one callback type, and the task names it is given."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# progress(task, done, total), drawn by the CLI. ``task`` is a label ("interpolate"),
# optionally followed by the point being evaluated in brackets ("interpolate [0.5]", see
# ``point_task``); a step without a count reports (task, 0, 0) as it starts and (task, 1, 1)
# when it ends (see ``step``). Counts of the analyses are image-evaluations (images x points).
Progress = Callable[[str, int, int], None]


def point_task(label: str, point: str) -> str:
    """The task of ``label`` while it evaluates ``point``: ``"interpolate [0.5]"``."""
    return f"{label} [{point}]" if point else label


def split_task(task: str) -> tuple[str, str]:
    """``(label, point)`` of a task made by :func:`point_task` (point ``""`` when none)."""
    match = re.fullmatch(r"(.*?) \[(.*)\]", task)
    return (match[1], match[2]) if match else (task, "")


@contextmanager
def step(progress: Progress | None, task: str) -> Iterator[None]:
    """Report a step without a count: ``(task, 0, 0)`` as it starts, ``(task, 1, 1)`` at its end."""
    if progress is None:
        yield
        return
    progress(task, 0, 0)
    yield
    progress(task, 1, 1)

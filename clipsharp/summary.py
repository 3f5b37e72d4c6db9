"""Summaries of a path: best alpha, gain, depth, barrier, failure mode.

All are computed from the measured points alone; alpha = 0 (zero-shot) and
alpha = 1 (fine-tuned) must be among them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .interpolation import PathPoint


def path_summary(
    points: Sequence[PathPoint], dataset: str, *, role: str, failure_threshold: float = 0.0
) -> dict:
    """Summary of one dataset's path.

    - ``best_alpha``, ``best_accuracy``: the arg-max of accuracy (the smallest alpha on ties);
    - ``gain`` = max_a acc(a) - acc(0);
    - ``gain_over_endpoints`` = max_a acc(a) - max(acc(0), acc(1));
    - ``depth`` = max_a loss(a) - loss(0);
    - ``barrier`` = max_a [loss(a) - ((1 - a) loss(0) + a loss(1))];
    - ``failure_mode`` (OOD sets only, else None) = gain <= failure_threshold.
    """
    alphas = [p.alpha for p in points]
    acc = [p.metrics[dataset].accuracy for p in points]
    loss = [p.metrics[dataset].loss for p in points]
    at = {a: i for i, a in enumerate(alphas)}
    if 0.0 not in at or 1.0 not in at:
        raise ValueError("a path summary needs the endpoints alpha = 0 and alpha = 1")
    acc0, acc1, loss0, loss1 = acc[at[0.0]], acc[at[1.0]], loss[at[0.0]], loss[at[1.0]]
    best = max(range(len(acc)), key=lambda i: (acc[i], -alphas[i]))
    gain = acc[best] - acc0
    barrier = max(
        value - ((1 - a) * loss0 + a * loss1) for a, value in zip(alphas, loss, strict=True)
    )
    return {
        "best_alpha": alphas[best],
        "best_accuracy": acc[best],
        "gain": gain,
        "gain_over_endpoints": acc[best] - max(acc0, acc1),
        "depth": max(loss) - loss0,
        "barrier": barrier,
        "failure_mode": (gain <= failure_threshold) if role == "ood" else None,
    }


def tripped(summary: dict, condition: str) -> list[str]:
    """What trips a ``--fail-on`` gate: OOD datasets in failure mode, or collapsed layers.

    ``condition`` is ``failure-mode`` (an ``interpolate`` summary) or ``collapse`` (a
    ``layerwise`` summary, reported as ``layer/dataset``).
    """
    if condition == "failure-mode":
        return [name for name, s in summary.items() if s.get("failure_mode") is True]
    if condition == "collapse":
        return [
            f"{row['layer']}/{name}"
            for row in summary.get("layers", [])
            for name, s in row.items()
            if isinstance(s, dict) and s.get("collapse") is True
        ]
    raise ValueError(f"unknown --fail-on condition {condition!r}")


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks on ties); None for fewer than 3 pairs."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return None if var == 0 else cov / var


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks

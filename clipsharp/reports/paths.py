"""Summaries of a path: best alpha, gain, depth, barrier, failure mode.

All are computed from the measured points alone; alpha = 0 (zero-shot) and
alpha = 1 (fine-tuned) must be among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .metrics import Metrics


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


@dataclass
class PathPoint:
    alpha: float
    metrics: dict[str, Metrics]  # dataset name -> metrics

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "metrics": {k: m.to_dict() for k, m in self.metrics.items()}}

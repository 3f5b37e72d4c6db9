"""Weight paths: theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned, written in place.

One working model serves the whole sweep: at each alpha only the tensors that
differ between the endpoints are rewritten (``torch.lerp`` into the live
tensor), and the zero-shot head is re-encoded only when a text-tower tensor
moved.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import Checkpoint
from .config import Progress, RunOptions
from .evaluate import Metrics, evaluate
from .journal import Journal
from .models import ClipClassifier, ZeroShotHeads, is_text_key
from .pipeline import Workspace
from .report import Report
from .summary import path_summary


def interpolate_weights(
    zero_shot: Mapping[str, torch.Tensor], fine_tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """The formula itself, out of place: (1 - alpha) * zs + alpha * ft for floating tensors.

    Integer tensors (equal in both, by pair validation) are taken from the fine-tuned side.
    ``torch.lerp`` is exact at the endpoints: alpha = 0 gives zs and alpha = 1 gives ft bit for bit.
    """
    return {
        key: torch.lerp(zs.float(), fine_tuned[key].float(), alpha).to(zs.dtype)
        if zs.is_floating_point()
        else fine_tuned[key].clone()
        for key, zs in zero_shot.items()
    }


@dataclass
class Endpoints:
    """The tensors that move along the path, in fp32 on the working device."""

    zero_shot: dict[str, torch.Tensor]  # key -> zero-shot value, only for moving keys
    fine_tuned: dict[str, torch.Tensor]  # key -> fine-tuned value, only for moving keys

    @property
    def keys(self) -> list[str]:
        return list(self.zero_shot)


def moving_keys(
    zero_shot: Checkpoint, fine_tuned: Checkpoint, exclude: str | None = None
) -> list[str]:
    """Floating tensors that differ between the endpoints and are not excluded by ``exclude``.

    Tensors equal in both (or integer) stay fixed on the whole path; excluded ones stay
    at the fine-tuned value.
    """
    pattern = re.compile(exclude) if exclude else None
    return [
        key
        for key, zs in zero_shot.tensors.items()
        if zs.is_floating_point()
        and not (pattern and pattern.search(key))
        and not torch.equal(zs, fine_tuned.tensors[key])
    ]


def endpoints(
    zero_shot: Checkpoint, fine_tuned: Checkpoint, keys: Iterable[str], device: torch.device
) -> Endpoints:
    keys = list(keys)
    return Endpoints(
        zero_shot={k: zero_shot.tensors[k].to(device, torch.float32) for k in keys},
        fine_tuned={k: fine_tuned.tensors[k].to(device, torch.float32) for k in keys},
    )


def path_between(workspace: Workspace, exclude: str | None = None) -> WeightPath:
    """The path from the workspace's zero-shot to its fine-tuned checkpoint, on its model."""
    zero_shot, fine_tuned = workspace.checkpoints["zero_shot"], workspace.checkpoints["fine_tuned"]
    keys = moving_keys(zero_shot, fine_tuned, exclude)
    ends = endpoints(zero_shot, fine_tuned, keys, workspace.device)
    return WeightPath(workspace.classifier, workspace.heads, ends)


class WeightPath:
    """Writes theta(alpha) into the working model, in place, for the endpoints' keys."""

    def __init__(self, classifier: ClipClassifier, heads: ZeroShotHeads, ends: Endpoints):
        self.classifier = classifier
        self.heads = heads
        self.ends = ends

    @torch.no_grad()
    def set_alpha(self, alpha: float, keys: Sequence[str] | None = None) -> None:
        """Write alpha into ``keys`` (default: every moving key); other tensors are untouched."""
        keys = self.ends.keys if keys is None else keys
        for key in keys:
            live = self.classifier.tensors[key]
            zs, ft = self.ends.zero_shot[key], self.ends.fine_tuned[key]
            if live.dtype == torch.float32:
                torch.lerp(zs, ft, alpha, out=live)
            else:  # lerp in fp32, then one rounding into the working dtype
                live.copy_(torch.lerp(zs, ft, alpha))
        if any(is_text_key(key) for key in keys):
            self.heads.invalidate()


@dataclass
class PathPoint:
    alpha: float
    metrics: dict[str, Metrics]  # dataset name -> metrics

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "metrics": {k: m.to_dict() for k, m in self.metrics.items()}}


def with_endpoints(alphas: Sequence[float]) -> list[float]:
    """The alphas plus 0 and 1, sorted: every summary is measured against the endpoints."""
    return sorted(set(alphas) | {0.0, 1.0})


def measure(
    path: WeightPath,
    datasets: Sequence,
    batch_size: int,
    *,
    journal: Journal | None = None,
    key: str = "",
) -> dict[str, Metrics]:
    """Every dataset evaluated at the working model's current weights.

    With a ``journal``, a point already recorded under ``key`` is returned as recorded,
    and a new one is recorded.
    """
    stored = journal.get(key) if journal else None
    if stored is not None:
        return stored
    metrics = {d.name: evaluate(path.classifier, path.heads, d, batch_size) for d in datasets}
    if journal:
        journal.record(key, metrics)
    return metrics


def sweep(
    path: WeightPath,
    datasets: Sequence,
    alphas: Sequence[float],
    batch_size: int,
    *,
    progress: Progress | None = None,
    journal: Journal | None = None,
) -> list[PathPoint]:
    """Evaluate every dataset at every alpha along ``path``."""
    points = []
    for done, alpha in enumerate(alphas):
        path.set_alpha(alpha)
        metrics = measure(path, datasets, batch_size, journal=journal, key=repr(alpha))
        points.append(PathPoint(alpha=alpha, metrics=metrics))
        if progress:
            progress("path", done + 1, len(alphas))
    return points


def run_interpolation(
    workspace: Workspace,
    options: RunOptions,
    *,
    progress: Progress | None = None,
    journal: Path | None = None,
    resume: bool = False,
) -> Report:
    """The ``interpolate`` analysis: metrics along the path and their summary per dataset.

    Args:
        workspace: the pair, the working model and the datasets (see ``open_workspace``).
        options: path, evaluation and data options.
        progress: called as ``progress("path", done, total)`` after every alpha.
        journal: a file recording finished points as the sweep goes (see ``journal.py``).
        resume: reuse the points of an existing ``journal`` written by the same run.
    """
    started = time.perf_counter()
    path = path_between(workspace, options.path.exclude)
    alphas = with_endpoints(options.path.alphas)
    inputs = workspace.inputs()
    config = run_config(workspace, options) | {
        "alphas": alphas,
        "moving_tensors": len(path.ends.keys),
    }
    identity = {"command": "interpolate", "inputs": inputs, "config": config}
    record = Journal(journal, identity, resume=resume) if journal else None
    try:
        points = sweep(
            path,
            workspace.datasets,
            alphas,
            options.eval.batch_size,
            progress=progress,
            journal=record,
        )
    finally:
        workspace.classifier.load(workspace.checkpoints["fine_tuned"].tensors)
    summary = {
        d.name: path_summary(
            points, d.name, role=d.spec.role, failure_threshold=options.path.failure_threshold
        )
        for d in workspace.datasets
    }
    return Report(
        command="interpolate",
        inputs=inputs,
        config=config,
        results={"convention": CONVENTION, "path": [p.to_dict() for p in points]},
        summary=summary,
        seconds=time.perf_counter() - started,
    )


CONVENTION = "theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned"


def run_config(workspace: Workspace, options: RunOptions) -> dict:
    """The report's ``config``: every option that affects the numbers."""
    return {
        "seed": options.data.seed,
        "limit": options.data.limit,
        "batch_size": options.eval.batch_size,
        "device": str(workspace.device),
        "precision": options.eval.precision,
        "templates": options.eval.templates if workspace.classifier.head is None else None,
        "head": "zero-shot" if workspace.classifier.head is None else "stored",
        "head_classnames": workspace.heads.head_classnames,
        "exclude": options.path.exclude,
        "extrapolate": options.path.extrapolate,
        "failure_threshold": options.path.failure_threshold,
        "world_size": distributed.world_size(),
    }

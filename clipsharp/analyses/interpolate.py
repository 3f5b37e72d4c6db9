"""Weight paths: theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned, written in place.

One working model serves the whole sweep: at each alpha only the tensors that
differ between the endpoints are rewritten (``torch.lerp`` into the live
tensor), and the zero-shot head is re-encoded only when a text-tower tensor
moves (the point's text identity is then its alpha).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.analysis import Analysis, run, run_config
from ..core.engine import Metric, Point
from ..core.weights import CONVENTION, _pair, alpha_key, moving_keys, path_between, with_endpoints
from ..core.workspace import Inputs, Workspace
from ..options import RunOptions
from ..reports.paths import PathPoint, path_summary
from ..reports.report import Report


@dataclass(frozen=True)
class Interpolation(Analysis):
    """The ``interpolate`` analysis: metrics along the path, and their summary per dataset."""

    options: RunOptions
    command: ClassVar[str] = "interpolate"

    @property
    def alphas(self) -> list[float]:
        return with_endpoints(self.options.path.alphas)

    def config(self, workspace: Workspace) -> dict:
        moving = moving_keys(*_pair(workspace), self.options.path.exclude)
        return run_config(workspace, self.options) | {
            "alphas": self.alphas,
            "moving_tensors": len(moving),
        }

    def points(self, workspace: Workspace) -> list[Point]:
        path = path_between(workspace, self.options.path.exclude)
        return [path.point(alpha) for alpha in self.alphas]

    def summarize(self, workspace: Workspace, measured: Metric) -> tuple[dict, dict]:
        points = [PathPoint(alpha, measured[alpha_key(alpha)]) for alpha in self.alphas]
        threshold = self.options.path.failure_threshold
        summary = {
            d.name: path_summary(points, d.name, role=d.spec.role, failure_threshold=threshold)
            for d in workspace.datasets
        }
        return {"convention": CONVENTION, "path": [p.to_dict() for p in points]}, summary


def run_interpolation(
    workspace: Workspace | Inputs,
    options: RunOptions,
    **how: Any,
) -> Report:
    """The ``interpolate`` analysis, run; ``how``: :func:`analysis.run`'s keywords (output,
    journal, resume, progress, reads)."""
    return run(Interpolation(options), workspace, **how)

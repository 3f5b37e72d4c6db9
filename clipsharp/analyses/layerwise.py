"""Layer-wise interpolation: move one layer group at a time (the paper's Figure 2).

For layer l and alpha, the working model holds the background checkpoint with
layer l replaced by (1 - alpha) * zero_shot[l] + alpha * fine_tuned[l].
``background="ft"`` moves one layer back toward zero-shot; ``"zs"`` moves one
layer toward fine-tuned. A group whose tensors are equal in both checkpoints
is reported ``unchanged`` and not evaluated: its path is flat by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.analysis import Analysis, run, run_config
from ..core.engine import Metric, Point
from ..core.layers import layer_groups, select_layers, tower_of
from ..core.prefix import stage_of, vit_depth
from ..core.weights import CONVENTION, path_between, with_endpoints
from ..core.workspace import Inputs, Workspace
from ..options import BACKGROUNDS, LayerwiseOptions, RunOptions
from ..progress import Where
from ..reports.paths import PathPoint, path_summary
from ..reports.report import Report


@dataclass(frozen=True)
class Layerwise(Analysis):
    """The ``layerwise`` analysis: one path per layer group, every dataset on each.

    Points: the background model once, then each changed layer at each alpha but the
    background's. With the prefix cache, a point starts from the activations below its
    layer (same numbers, bit for bit).
    """

    options: RunOptions
    layer_options: LayerwiseOptions = LayerwiseOptions()
    command: ClassVar[str] = "layerwise"

    @property
    def alphas(self) -> list[float]:
        return with_endpoints(self.options.path.alphas)

    @property
    def home(self) -> float:
        return BACKGROUNDS[self.layer_options.background]

    def config(self, workspace: Workspace) -> dict:
        config = run_config(workspace, self.options) | {
            "alphas": self.alphas,
            "granularity": self.layer_options.granularity,
            "background": self.layer_options.background,
            "layers": self.layer_options.layers,
            "collapse_threshold": self.layer_options.collapse_threshold,
        }
        del config["failure_threshold"]
        return config

    def layers(self, workspace: Workspace) -> dict[str, tuple[list[str], list[str]]]:
        """Chosen layer -> (its tensors, those of them that move on the path)."""
        groups = layer_groups(
            workspace.checkpoints["fine_tuned"].tensors, self.layer_options.granularity
        )
        moving = set(path_between(workspace, self.options.path.exclude).ends.keys)
        chosen = select_layers(groups, self.layer_options.layers)
        return {
            layer: (groups[layer], [k for k in groups[layer] if k in moving]) for layer in chosen
        }

    def points(self, workspace: Workspace) -> list[Point]:
        path = path_between(workspace, self.options.path.exclude)
        home = self.home
        depth = vit_depth(workspace.classifier) if self.layer_options.prefix_cache else None
        points = [Point("background", lambda: path.set_alpha(home), where=Where("background"))]
        for layer, (_, keys) in self.layers(workspace).items():
            stage = stage_of(keys, depth) if depth and keys else 0
            for alpha in self.alphas:
                if keys and alpha != home:
                    points.append(
                        Point(
                            key=f"{layer}@{alpha!r}",
                            write=lambda a=alpha, k=keys: path.set_alpha(a, k),
                            undo=lambda k=keys: path.set_alpha(home, k),  # exact: lerp at 0, 1
                            stage=stage,
                            where=Where(layer=layer, alpha=alpha),
                        )
                    )
        return points

    def summarize(self, workspace: Workspace, measured: Metric) -> tuple[dict, dict]:
        rows = []
        for layer, (tensors, keys) in self.layers(workspace).items():
            row = {"layer": layer, "tower": tower_of(layer), "tensors": tensors}
            row["unchanged"] = not keys
            if keys:
                points = [
                    PathPoint(a, measured["background" if a == self.home else f"{layer}@{a!r}"])
                    for a in self.alphas
                ]
                row["path"] = [p.to_dict() for p in points]
                row["summary"] = _layer_summary(points, workspace, self.layer_options)
            rows.append(row)
        results = {
            "convention": CONVENTION + "; one layer moves, the others hold the background",
            "layers": [{k: v for k, v in row.items() if k != "summary"} for row in rows],
        }
        return results, {"layers": [_summary_row(row) for row in rows]}


def run_layerwise(
    workspace: Workspace | Inputs,
    options: RunOptions,
    layer_options: LayerwiseOptions,
    **how: Any,
) -> Report:
    """The ``layerwise`` analysis, run; ``how``: :func:`analysis.run`'s keywords."""
    return run(Layerwise(options, layer_options), workspace, **how)


def _layer_summary(points, workspace: Workspace, layer_options: LayerwiseOptions) -> dict:
    """Per dataset: gain, depth, barrier of the layer's path, and collapse.

    collapse: min accuracy on the path below both endpoints by more than the threshold.
    """
    result = {}
    for d in workspace.datasets:
        summary = path_summary(points, d.name, role=d.spec.role)
        accuracies = {p.alpha: p.metrics[d.name].accuracy for p in points}
        floor = min(accuracies[0.0], accuracies[1.0]) - layer_options.collapse_threshold
        result[d.name] = {
            "gain": summary["gain"],
            "depth": summary["depth"],
            "barrier": summary["barrier"],
            "min_accuracy": min(accuracies.values()),
            "collapse": min(accuracies.values()) < floor,
        }
    return result


def _summary_row(row: dict) -> dict:
    if row["unchanged"]:
        return {"layer": row["layer"], "unchanged": True}
    return {"layer": row["layer"], "unchanged": False, **row["summary"]}

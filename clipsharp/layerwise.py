"""Layer-wise interpolation: move one layer group at a time (the paper's Figure 2).

For layer l and alpha, the working model holds the background checkpoint with
layer l replaced by (1 - alpha) * zero_shot[l] + alpha * fine_tuned[l].
``background="ft"`` moves one layer back toward zero-shot; ``"zs"`` moves one
layer toward fine-tuned. A group whose tensors are equal in both checkpoints
is reported ``unchanged`` and not evaluated: its path is flat by construction.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from .config import Progress, RunOptions
from .errors import ConfigError
from .interpolation import (
    CONVENTION,
    PathPoint,
    WeightPath,
    measure,
    path_between,
    run_config,
    with_endpoints,
)
from .journal import Journal
from .layers import GRANULARITIES, layer_groups, select_layers, tower_of
from .pipeline import Workspace
from .prefix import PrefixCache, stage_of
from .report import Report
from .summary import path_summary

BACKGROUNDS = {"ft": 1.0, "zs": 0.0}  # background -> the alpha at which every layer sits


@dataclass(frozen=True)
class LayerwiseOptions:
    granularity: str = "block"  # block | module | tensor
    background: str = "ft"  # ft: move one layer toward zero-shot; zs: toward fine-tuned
    layers: str | None = None  # comma list of layer names or globs; None: every layer
    collapse_threshold: float = 0.05  # accuracy drop below both endpoints that is a collapse
    prefix_cache: bool = True  # reuse the activations below the moving layer (ViT image towers)

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"--granularity {self.granularity!r} is unknown; choose one of "
                + ", ".join(GRANULARITIES)
            )
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"--background {self.background!r} is unknown; choose ft or zs")


def run_layerwise(
    workspace: Workspace,
    options: RunOptions,
    layer_options: LayerwiseOptions,
    *,
    progress: Progress | None = None,
    journal: Path | None = None,
    resume: bool = False,
) -> Report:
    """The ``layerwise`` analysis: one path per layer group, every dataset on each.

    ``journal`` / ``resume``: record finished points as they go, and reuse them
    (see ``run_interpolation``).
    """
    started = time.perf_counter()
    fine_tuned = workspace.checkpoints["fine_tuned"]
    groups = layer_groups(fine_tuned.tensors, layer_options.granularity)
    chosen = select_layers(groups, layer_options.layers)
    path = path_between(workspace, options.path.exclude)
    moving = set(path.ends.keys)
    alphas = with_endpoints(options.path.alphas)
    home = BACKGROUNDS[layer_options.background]
    inputs = workspace.inputs()
    config = _config(workspace, options, layer_options, alphas)
    identity = {"command": "layerwise", "inputs": inputs, "config": config}
    record = Journal(journal, identity, resume=resume) if journal else None
    layers = {layer: [k for k in groups[layer] if k in moving] for layer in chosen}
    sweep = _LayerSweep(path, workspace.datasets, options.eval.batch_size, record, progress)
    if layer_options.prefix_cache:
        sweep.cache = PrefixCache(workspace.classifier, workspace.datasets, options.eval.batch_size)
    sweep.total = 1 + sum(len(alphas) - 1 for keys in layers.values() if keys)
    rows = []
    try:
        path.set_alpha(home)  # the background model, measured once for every layer
        background = sweep.point("background")
        for layer, keys in layers.items():
            row = {"layer": layer, "tower": tower_of(layer), "tensors": groups[layer]}
            row["unchanged"] = not keys
            if keys:
                points = sweep.layer_path(layer, keys, alphas, home, background)
                row["path"] = [p.to_dict() for p in points]
                row["summary"] = _layer_summary(points, workspace, layer_options)
            rows.append(row)
    finally:
        workspace.classifier.load(fine_tuned.tensors)
    return Report(
        command="layerwise",
        inputs=inputs,
        config=config,
        results={
            "convention": CONVENTION + "; one layer moves, the others hold the background",
            "layers": [{k: v for k, v in row.items() if k != "summary"} for row in rows],
        },
        summary={"layers": [_summary_row(row) for row in rows]},
        seconds=time.perf_counter() - started,
    )


def _config(workspace, options: RunOptions, layer_options: LayerwiseOptions, alphas) -> dict:
    config = run_config(workspace, options) | {
        "alphas": alphas,
        "granularity": layer_options.granularity,
        "background": layer_options.background,
        "layers": layer_options.layers,
        "collapse_threshold": layer_options.collapse_threshold,
    }
    del config["failure_threshold"]
    return config


class _LayerSweep:
    """Evaluates points of layer paths, from the prefix cache when it can; counts them."""

    def __init__(self, path: WeightPath, datasets, batch_size: int, journal, progress) -> None:
        self.path, self.datasets, self.batch_size = path, datasets, batch_size
        self.journal, self.progress = journal, progress
        self.done, self.total = 0, 0
        self.cache: PrefixCache | None = None

    def point(self, key: str, datasets=None) -> dict:
        datasets = self.datasets if datasets is None else datasets
        metrics = measure(self.path, datasets, self.batch_size, journal=self.journal, key=key)
        self.done += 1
        if self.progress:
            self.progress("layerwise", self.done, self.total)
        return metrics

    def layer_path(self, layer, keys, alphas, home: float, background: dict) -> list[PathPoint]:
        """Move ``keys`` along the alphas, then put them back at the background (exactly)."""
        stage, datasets = 0, self.datasets
        if self.cache is not None and self.cache.usable:
            stage = stage_of(keys, self.cache.depth)
            datasets = self.cache.at(stage)  # the weights are all at the background here
        points = []
        try:
            with self.cache.encoding_from(stage) if stage else nullcontext():
                for alpha in alphas:
                    if alpha == home:  # the background model itself
                        points.append(PathPoint(alpha, background))
                        continue
                    self.path.set_alpha(alpha, keys)
                    points.append(PathPoint(alpha, self.point(f"{layer}@{alpha!r}", datasets)))
        finally:
            self.path.set_alpha(home, keys)  # lerp is exact at 0 and 1: a bit-identical restore
        return points


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

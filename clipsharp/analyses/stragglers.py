"""Straggler layers: layer-wise sharpness and its outliers (the paper's Figure 4).

Each layer group's sharpness is the sharpness measure with the perturbation
restricted to that group, measured on the fine-tuned model and, for
reference, on the zero-shot model. Layers are ranked within their tower by a
robust z-score, z = (s - median) / (1.4826 * MAD); stragglers have z > ``z``
(or are the ``top_k`` highest). ``by="barrier"`` ranks by each layer's depth
from a ``layerwise`` report instead.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from ..core.analysis import Analysis, journal_of, run_checked, run_config, write_report
from ..core.checkpoint import Checkpoint, check_made_on
from ..core.engine import Engine
from ..core.layers import layer_groups, tower_of
from ..core.outputs import Paths
from ..core.perturb import NoiseBank, perturbed_keys
from ..core.workspace import Inputs, Workspace
from ..errors import ConfigError, ReportError
from ..options import RunOptions, SharpnessOptions, StragglerOptions
from ..progress import Progress, Where
from ..reports.report import Report, read_report
from ..reports.statistics import spearman
from .sharpness import Base, Draws, SharpnessMetrics, average_metrics, measure_worst

MAD_SCALE = 1.4826  # makes the MAD a consistent estimator of the standard deviation
MEAN_AD_SCALE = 1.2533  # sqrt(pi / 2): the same for the mean absolute deviation


def robust_z(values: Sequence[float]) -> list[float]:
    """(v - median) / (1.4826 * MAD); with MAD = 0, the mean absolute deviation scaled by
    1.2533 stands in (Iglewicz and Hoaglin); with both 0, every z is 0."""
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    scale = MAD_SCALE * statistics.median(deviations)
    if scale == 0:
        scale = MEAN_AD_SCALE * statistics.fmean(deviations)
    return [0.0 if scale == 0 else (v - median) / scale for v in values]


def choose(rows: list[dict], options: StragglerOptions, value: str) -> list[str]:
    """Fill each row's ``z`` (within its tower) and return the straggler layers, highest first."""
    chosen = []
    for tower in sorted({r["tower"] for r in rows}):
        members = [r for r in rows if r["tower"] == tower]
        for row, z in zip(members, robust_z([r[value] for r in members]), strict=True):
            row["z"] = z
        ranked = sorted(members, key=lambda r: -r[value])
        if options.top_k:
            chosen += ranked[: options.top_k]
        else:
            chosen += [r for r in ranked if r["z"] > options.z]
    return [r["layer"] for r in sorted(chosen, key=lambda r: -r[value])]


def layer_depths(layerwise: dict, source: str) -> dict[str, dict[str, float]]:
    """``{dataset: {layer: depth}}`` of the OOD sets of a layerwise report."""
    if layerwise.get("command") != "layerwise":
        raise ReportError(f"--layerwise {source} is a {layerwise.get('command')!r} report")
    ood = [d["name"] for d in layerwise["inputs"]["datasets"] if d["role"] == "ood"]
    if not ood:
        raise ReportError(f"--layerwise {source} has no OOD dataset to take layer depths from")
    rows = [r for r in layerwise["summary"]["layers"] if not r["unchanged"]]
    return {
        name: {r["layer"]: r[name]["depth"] for r in rows if r[name]["depth"] is not None}
        for name in ood
    }


def _rank_dataset(workspace: Workspace, options: StragglerOptions) -> str:
    names = [d.name for d in workspace.datasets]
    if options.rank_on is not None:
        if options.rank_on not in names:
            raise ConfigError(f"--rank-on {options.rank_on!r} is not a dataset; choose {names}")
        return options.rank_on
    ids = [d.name for d in workspace.datasets if d.spec.role == "id"]
    return (ids or names)[0]


@dataclass(frozen=True)
class Stragglers(Analysis):
    """The ``stragglers`` analysis: the sharpness of each layer group alone, of the fine-tuned
    model (or the one model) and, for reference, of the zero-shot model; ranked within each
    tower, with the outliers. All layers and draws are points of one pass over the data."""

    options: RunOptions
    measure_options: SharpnessOptions
    stragglers: StragglerOptions = StragglerOptions()
    layerwise: dict | None = None  # the layerwise report read: Spearman of sharpness with depth
    command: ClassVar[str] = "stragglers"

    def __post_init__(self) -> None:
        if len(self.measure_options.rhos) != 1:
            raise ConfigError("stragglers measures at one --rho; give a single value")

    def check(self, workspace: Workspace) -> None:
        _rank_dataset(workspace, self.stragglers)  # a bad --rank-on fails before any work
        if self.measure_options.include_text:
            workspace.require_text_tower("--include-text")

    def config(self, workspace: Workspace) -> dict:
        config = run_config(workspace, self.options) | asdict(self.measure_options)
        config |= {k: v for k, v in asdict(self.stragglers).items() if k != "layerwise"}
        for key in ("exclude", "extrapolate", "failure_threshold"):
            config.pop(key, None)
        return config | {
            "rho": self.measure_options.rhos[0],
            "exclude": self.measure_options.exclude,
        }

    def roles(self, workspace: Workspace) -> list[str]:
        """The measured checkpoint first, then the zero-shot one for reference (a pair)."""
        measured = "fine_tuned" if "fine_tuned" in workspace.checkpoints else "model"
        return [measured] + (["zero_shot"] if "zero_shot" in workspace.checkpoints else [])

    def measure(self, workspace: Workspace, engine: Engine) -> dict:
        """``{role: {layer: {dataset: SharpnessMetrics}}}``."""
        groups = layer_groups(perturbed_keys(workspace.classifier, self.measure_options))
        bases = [
            Base(
                role,
                lambda r=role: workspace.classifier.load(workspace.checkpoints[r].tensors),
                Where(role),
            )
            for role in self.roles(workspace)
        ]
        options, rho = self.measure_options, self.measure_options.rhos[0]
        if options.kind == "worst":
            clean = engine.evaluate([b.point() for b in bases], name="clean", label="clean")
            return {
                base.name: {
                    layer: measure_worst(engine, [base], keys, options, clean, layer)[
                        (base.name, rho)
                    ]
                    for layer, keys in groups.items()
                }
                for base in bases
            }
        draws = Draws(workspace.classifier, NoiseBank(workspace.classifier, self.options.data.seed))
        points = []
        for base in bases:
            points.append(draws.clean(base))
            for layer, keys in groups.items():
                points += draws.around(base, keys, [rho], options.iterations, layer)
        measured = engine.evaluate(points, label="layer sharpness")
        return {
            base.name: {
                layer: average_metrics(
                    measured, base.name, rho, options.iterations, workspace.datasets, layer
                )
                for layer in groups
            }
            for base in bases
        }

    def summarize(self, workspace: Workspace, measured: dict) -> tuple[dict, dict]:
        roles = self.roles(workspace)
        sharp, reference = measured[roles[0]], measured.get("zero_shot")
        rank_on = _rank_dataset(workspace, self.stragglers)
        rows = [_row(layer, sharp, reference, rank_on) for layer in sharp]
        summary = {"by": "sharpness", "rule": self.stragglers.rule(), "rank_on": rank_on}
        summary["stragglers"] = choose(rows, self.stragglers, "sharpness")
        if self.layerwise is not None:
            summary["spearman"] = _correlations(rows, layer_depths(self.layerwise, "report"))
        return {"layers": rows}, summary


def run_stragglers(
    workspace: Workspace | Inputs,
    options: RunOptions,
    measure: SharpnessOptions,
    stragglers: StragglerOptions,
    *,
    output: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    reads: Paths = (),
) -> Report:
    """The ``stragglers`` command: by layer-wise sharpness (the :class:`Stragglers` analysis,
    with the Spearman correlation against the depths of ``stragglers.layerwise`` when given),
    or, ``by="barrier"``, by the depths of that layerwise report (no model is evaluated).

    The keywords are :func:`analysis.run`'s; the layerwise report is one of the run's
    inputs, read once the outputs are checked, before any work.
    """
    reads = [*reads, ("the --layerwise report", stragglers.layerwise)]
    journal = journal_of(options, workspace, output, resume, reads)  # before it is read
    if stragglers.by == "barrier":
        report = barrier_stragglers_of(workspace.checkpoints, stragglers)
        write_report(report, output)
        return report
    path = stragglers.layerwise
    layerwise = read_report(path, "layerwise", complete=True) if path is not None else None
    analysis = Stragglers(options, measure, stragglers, layerwise)
    return run_checked(
        analysis, workspace, journal, output=output, resume=resume, progress=progress
    )


def barrier_stragglers_of(
    checkpoints: Mapping[str, Checkpoint | str | Path], stragglers: StragglerOptions
) -> Report:
    """``stragglers --by barrier``: read and check the ``layerwise`` report (made for these
    checkpoints, every field present), then rank its layer depths. No model is evaluated."""
    layerwise = stragglers.layerwise
    if layerwise is None:
        raise ConfigError("--by barrier needs --layerwise LAYERS.json (a layerwise report)")
    doc = read_report(layerwise, "layerwise", complete=True)
    check_made_on(doc, checkpoints, f"--layerwise {layerwise}", "run layerwise on this pair first")
    return barrier_stragglers(doc, stragglers, str(layerwise))


def barrier_stragglers(layerwise: dict, stragglers: StragglerOptions, source: str) -> Report:
    """Stragglers by layer depth, read from a ``layerwise`` report (no model is evaluated)."""
    depths = layer_depths(layerwise, source)
    rank_on = stragglers.rank_on or next(iter(depths))
    if rank_on not in depths:
        raise ConfigError(f"--rank-on {rank_on!r} is not an OOD set of {source}: {list(depths)}")
    rows = [
        {"layer": layer, "tower": tower_of(layer), "depth": depth}
        for layer, depth in depths[rank_on].items()
    ]
    return Report(
        command="stragglers",
        inputs=layerwise["inputs"],
        config={"by": "barrier", "layerwise": source, "z": stragglers.z, "top_k": stragglers.top_k},
        results={"layers": rows},
        summary={
            "by": "barrier",
            "rule": stragglers.rule(),
            "rank_on": rank_on,
            "stragglers": choose(rows, stragglers, "depth"),
        },
    )


def _row(layer: str, sharp: dict, reference: dict | None, rank_on: str) -> dict:
    mine: SharpnessMetrics = sharp[layer][rank_on]
    return {
        "layer": layer,
        "tower": tower_of(layer),
        "sharpness": mine.sharpness,
        "stderr": mine.stderr,
        "zero_shot_sharpness": reference[layer][rank_on].sharpness if reference else None,
        "metrics": {name: m.to_dict() for name, m in sharp[layer].items()},
    }


def _correlations(rows: list[dict], depths: dict[str, dict[str, float]]) -> dict:
    """Spearman correlation of layer sharpness with layer depth, per OOD set of a layerwise run."""
    result = {}
    for name, by_layer in depths.items():
        shared = [r for r in rows if r["layer"] in by_layer]
        value = spearman([r["sharpness"] for r in shared], [by_layer[r["layer"]] for r in shared])
        result[name] = {"spearman": value, "layers": len(shared)}
    return result

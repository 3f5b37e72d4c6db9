"""Adaptive sharpness (Andriushchenko et al., ICML 2023) of the classifier, at any weights w.

Every perturbation is relative to the weights: delta = |w| * u, elementwise.
Measurements run on the engine (``engine.py``): the clean model and every noise draw
are points, evaluated on each block of images in one pass over the data.

- ``average``: S = E_u[L(w + |w| u)] - L(w), u ~ N(0, rho^2 I). Noise draw k is a
  function of (seed, k) alone and serves every batch, alpha and rank (common
  random numbers); S is the mean over draws of L_k - L(w), with its standard error.
- ``worst``: max over ||u||_p <= rho of L(w + |w| u) - L(w), by projected gradient
  ascent with momentum and step halving (APGD-style).

Weights are written in place and restored by copy (never by subtracting the
noise back) after every draw, and on error or interruption.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from ..core.analysis import Analysis, run, run_config
from ..core.engine import Engine, Metric, Point, loss_gradient
from ..core.layers import layer_groups
from ..core.models import ClipClassifier, ZeroShotHeads
from ..core.perturb import NoiseBank, Perturbation, perturbed_keys
from ..core.weights import CONVENTION, path_between
from ..core.workspace import Inputs, Workspace
from ..data.load import EvalData
from ..options import RunOptions, SharpnessOptions
from ..progress import Where
from ..reports.metrics import Metrics, at_chance
from ..reports.report import Report
from .ascent import Ascent, u_norm


@dataclass(frozen=True)
class SharpnessMetrics:
    """Sharpness of one dataset at one point, with the losses and error rates behind it."""

    sharpness: float  # perturbed loss - clean loss (average: mean over draws of the difference)
    stderr: float | None  # standard error of `sharpness` over draws; None: worst case, one draw
    clean_loss: float  # L(w), mean cross-entropy in nats
    perturbed_loss: float  # average: mean over draws of L(w + delta); worst: the largest found
    clean_error: float  # error rate of w
    perturbed_error: float  # error rate at the same perturbations (mean over draws)
    error_sharpness: float  # perturbed error - clean error (mean over draws)
    error_stderr: float | None  # standard error of `error_sharpness` over draws
    saturated: bool  # perturbed model at chance: this rho is too large to say anything
    clean_at_chance: bool  # the unperturbed model is already at chance on this dataset
    num_examples: int
    num_classes: int
    delta_norm: float | None = None  # worst case: ||u||_p of the reported delta (<= rho)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SharpnessPoint:
    alpha: float | None  # point of the path; None when one model is measured
    rho: float
    metrics: dict[str, SharpnessMetrics]  # dataset name -> metrics

    def to_dict(self) -> dict:
        metrics = {name: m.to_dict() for name, m in self.metrics.items()}
        return {"alpha": self.alpha, "rho": self.rho, "metrics": metrics}


@dataclass(frozen=True)
class Base:
    """Unperturbed weights that draws are taken around: a point of the path, or a checkpoint."""

    name: str  # e.g. "alpha=0.5", "fine_tuned"; the key of the clean point
    write: Callable[[], None]  # writes the base into the working model
    where: Where  # where it lies, for progress: Where(alpha=0.5), Where("fine_tuned")

    def point(self) -> Point:
        return Point(self.name, self.write, where=self.where)


class Draws:
    """Engine points for average sharpness: a base clean, and each (rho, draw) around it.

    Give the points of one base one after the other: the base is then written once per
    block. A draw writes w + |w| * rho * z_k over its keys, and its undo copies w back.
    """

    def __init__(self, classifier: ClipClassifier, bank: NoiseBank):
        self.classifier, self.bank = classifier, bank
        self.holds: str | None = None  # the base the working model holds now
        self.perturbation: Perturbation | None = None

    def clean(self, base: Base) -> Point:
        return Point(base.name, lambda: self._hold(base), where=base.where)

    def around(
        self,
        base: Base,
        keys: Sequence[str],
        rhos: Sequence[float],
        iterations: int,
        layer: str = "",
    ) -> list[Point]:
        """The draws at ``base`` perturbing ``keys``; ``layer`` names the group of the keys
        when several are measured (stragglers)."""
        points = []
        for rho in rhos:
            for draw in range(iterations):
                key = draw_key(base.name, rho, draw, layer)
                write = lambda r=rho, k=draw: self._perturb(base, keys, r, k)  # noqa: E731
                where = replace(base.where, layer=layer, rho=rho, draw=draw)
                points.append(Point(key, write, undo=self._restore, where=where))
        return points

    def _hold(self, base: Base) -> None:
        if self.holds != base.name:
            base.write()
            self.holds = base.name

    def _perturb(self, base: Base, keys: Sequence[str], rho: float, draw: int) -> None:
        self._hold(base)
        self.perturbation = Perturbation(self.classifier, keys).save()
        unit = self.bank.unit(keys, draw)
        self.perturbation.write((key, rho * z) for key, z in unit.items())

    def _restore(self) -> None:
        if self.perturbation is not None:
            self.perturbation.restore()
            self.perturbation = None


def draw_key(base: str, rho: float, draw: int, layer: str = "") -> str:
    return f"{_at_layer(base, layer)}/rho={rho!r}/draw={draw}"


def _at_layer(base: str, layer: str) -> str:
    """The name of ``base`` with ``layer`` perturbed alone (stragglers), in the journal."""
    return f"{base}/{layer}" if layer else base


def average_metrics(
    measured: Metric, base: str, rho: float, iterations: int, datasets, layer: str = ""
) -> dict[str, SharpnessMetrics]:
    """Dataset name -> average sharpness at ``base`` and ``rho`` from the engine's metrics."""
    return {
        d.name: _over_draws(
            measured[base][d.name],
            [measured[draw_key(base, rho, k, layer)][d.name] for k in range(iterations)],
            d.num_classes,
        )
        for d in datasets
    }


def measure_sharpness(
    classifier: ClipClassifier,
    heads: ZeroShotHeads,
    datasets: Sequence[EvalData],
    keys: Sequence[str],
    options: SharpnessOptions,
    *,
    rho: float,
    batch_size: int,
    seed: int = 0,
) -> dict[str, SharpnessMetrics]:
    """Sharpness of the classifier's current weights, perturbing ``keys`` only.

    Average case: ``options.iterations`` draws shared by all datasets, in one pass over the
    data; worst case: one ascent per dataset. The weights are bit-identical afterwards,
    also when an error interrupts the measurement. Returns dataset name -> metrics.
    """
    engine = Engine(classifier, heads, datasets, batch_size)
    heads.invalidate()  # the heads of the weights as they are now
    base = Base("current", lambda: None, Where("current"))
    if options.kind == "worst":
        clean = engine.evaluate([base.point()], name=None)[base.name]
        return {
            d.name: worst_sharpness(engine, base, keys, d, clean[d.name], rho, options)
            for d in datasets
        }
    draws = Draws(classifier, NoiseBank(classifier, seed))
    points = [draws.clean(base), *draws.around(base, keys, [rho], options.iterations)]
    measured = engine.evaluate(points, name=None)
    return average_metrics(measured, base.name, rho, options.iterations, datasets)


def _over_draws(clean: Metrics, draws: Sequence[Metrics], num_classes: int) -> SharpnessMetrics:
    """Means and standard errors over draws of the per-draw differences from the clean model."""
    loss_rise = [m.loss - clean.loss for m in draws]  # exactly 0 each when rho = 0
    error_rise = [m.error - clean.error for m in draws]
    return _sharpness_metrics(
        clean,
        num_classes,
        loss=statistics.fmean(m.loss for m in draws),
        accuracy=statistics.fmean(m.accuracy for m in draws),
        sharpness=statistics.fmean(loss_rise),
        error_sharpness=statistics.fmean(error_rise),
        stderr=_stderr(loss_rise),
        error_stderr=_stderr(error_rise),
    )


def _sharpness_metrics(
    clean: Metrics, num_classes: int, *, loss: float, accuracy: float, **measured
) -> SharpnessMetrics:
    """``loss`` and ``accuracy`` of the perturbed model, beside the clean model's."""
    return SharpnessMetrics(
        clean_loss=clean.loss,
        perturbed_loss=loss,
        clean_error=clean.error,
        perturbed_error=1.0 - accuracy,
        saturated=at_chance(loss, accuracy, num_classes, clean.count),
        clean_at_chance=at_chance(clean.loss, clean.accuracy, num_classes, clean.count),
        num_examples=clean.count,
        num_classes=num_classes,
        **measured,
    )


def _stderr(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def worst_sharpness(
    engine: Engine,
    base: Base,
    keys: Sequence[str],
    data: EvalData,
    clean: Metrics,
    rho: float,
    options: SharpnessOptions,
) -> SharpnessMetrics:
    """max over ||u||_p <= rho of L(w + |w| u) - L(w) at ``base``, by ascent steps.

    Each step streams the dataset once for the full gradient. The loss is the mean over
    all of ``data``; the reported perturbation is the best iterate (or u = 0, the clean
    model, when no step raised the loss).
    """
    base.write()
    with Perturbation(engine.classifier, keys) as perturbation:
        ascent = Ascent(perturbation, rho, options.norm, clean.loss)
        step = engine.steps("worst-case ascent", options.iterations)
        best_u, last_u = ascent.run(
            lambda: loss_gradient(engine, data, keys), options.iterations, step
        )
        candidates = [  # the last iterate was never evaluated
            Point(
                name,
                lambda u=u: perturbation.write(u.items()),
                undo=perturbation.restore,
                where=Where(name),
            )
            for name, u in (("best", best_u), ("last", last_u))
        ]
        found = engine.evaluate(candidates, name=None, datasets=[data])
    name, u = max((("best", best_u), ("last", last_u)), key=lambda c: found[c[0]][data.name].loss)
    worst = found[name][data.name]
    return _sharpness_metrics(
        clean,
        data.num_classes,
        loss=worst.loss,
        accuracy=worst.accuracy,
        sharpness=worst.loss - clean.loss,
        error_sharpness=worst.error - clean.error,
        stderr=None,
        error_stderr=None,
        delta_norm=u_norm(u, options.norm),
    )


def measure_worst(
    engine: Engine,
    bases: Sequence[Base],
    keys: Sequence[str],
    options: SharpnessOptions,
    clean: Metric,
    layer: str = "",
) -> dict[tuple[str, float], dict[str, SharpnessMetrics]]:
    """``{(base, rho): {dataset: metrics}}`` of worst-case sharpness around each base, given
    the ``clean`` metrics of the bases. Each finished ascent is journalled; a resumed run
    takes it from the journal instead of ascending again."""
    result = {}
    for base in bases:
        for rho in options.rhos:
            result[(base.name, rho)] = {}
            for data in engine.datasets:
                name = f"{_at_layer(base.name, layer)}/rho={rho!r}/{data.name}"
                stored = engine.journal.get(name) if engine.journal else None
                if stored is None:
                    found = worst_sharpness(
                        engine, base, keys, data, clean[base.name][data.name], rho, options
                    )
                    if engine.journal:
                        engine.journal.record(name, found.to_dict())
                else:
                    found = SharpnessMetrics(**stored)
                result[(base.name, rho)][data.name] = found
    return result


@dataclass(frozen=True)
class Sharpness(Analysis):
    """The ``sharpness`` analysis: at every alpha of the path (two checkpoints), or of one
    model. One report point per (alpha, rho); average: (iterations + 1) points each."""

    options: RunOptions
    sharpness: SharpnessOptions = SharpnessOptions()
    command: ClassVar[str] = "sharpness"

    def check(self, workspace: Workspace) -> None:
        if self.sharpness.include_text:
            workspace.require_text_tower("--include-text")

    def alphas(self, workspace: Workspace) -> list[float | None]:
        return list(self.options.path.alphas) if "zero_shot" in workspace.checkpoints else [None]

    def bases(self, workspace: Workspace) -> list[Base]:
        if "zero_shot" not in workspace.checkpoints:  # one model, measured as it is
            return [Base("model", lambda: None, Where("model"))]
        path = path_between(workspace, self.options.path.exclude)
        return [
            Base(f"alpha={a!r}", lambda a=a: path.set_alpha(a), Where(alpha=a))
            for a in self.alphas(workspace)
        ]

    def config(self, workspace: Workspace) -> dict:
        keys = perturbed_keys(workspace.classifier, self.sharpness)
        pair = "zero_shot" in workspace.checkpoints
        return (
            run_config(workspace, self.options)
            | asdict(self.sharpness)
            | {
                "alphas": self.alphas(workspace) if pair else None,
                "path_exclude": self.options.path.exclude,
                "perturbed_layers": list(layer_groups(keys)),
                "perturbed_tensors": len(keys),
                "perturbed_parameters": sum(workspace.classifier.tensors[k].numel() for k in keys),
            }
        )

    def measure(self, workspace: Workspace, engine: Engine) -> dict:
        keys = perturbed_keys(workspace.classifier, self.sharpness)
        bases, options = self.bases(workspace), self.sharpness
        if options.kind == "worst":
            clean = engine.evaluate([b.point() for b in bases], name="clean", label="clean")
            return measure_worst(engine, bases, keys, options, clean)
        draws = Draws(workspace.classifier, NoiseBank(workspace.classifier, self.options.data.seed))
        points = []
        for base in bases:
            points += [
                draws.clean(base),
                *draws.around(base, keys, options.rhos, options.iterations),
            ]
        measured = engine.evaluate(points, label="sharpness")
        datasets, iterations = workspace.datasets, options.iterations
        return {
            (b.name, rho): average_metrics(measured, b.name, rho, iterations, datasets)
            for b in bases
            for rho in options.rhos
        }

    def summarize(self, workspace: Workspace, measured: dict) -> tuple[dict, dict]:
        pair = "zero_shot" in workspace.checkpoints
        points = [
            SharpnessPoint(alpha, rho, measured[(base.name, rho)])
            for alpha, base in zip(self.alphas(workspace), self.bases(workspace), strict=True)
            for rho in self.sharpness.rhos
        ]
        results = {
            "convention": CONVENTION if pair else None,
            "kind": self.sharpness.kind,
            "points": [p.to_dict() for p in points],
        }
        summary = {d.name: sharpness_summary(points, d.name) for d in workspace.datasets}
        return results, summary


def run_sharpness(
    workspace: Workspace | Inputs,
    options: RunOptions,
    sharpness: SharpnessOptions,
    **how: Any,
) -> Report:
    """The ``sharpness`` analysis, run; ``how``: :func:`analysis.run`'s keywords."""
    return run(Sharpness(options, sharpness), workspace, **how)


def sharpness_summary(points: Sequence[SharpnessPoint], dataset: str) -> list[dict]:
    """Per rho: sharpness at alpha = 0 and 1 (when measured), the largest and its alpha,
    and the alphas whose perturbed model is at chance (``saturated``)."""
    summary = []
    for rho in sorted({p.rho for p in points}):
        at = {p.alpha: p.metrics[dataset] for p in points if p.rho == rho}
        top = max(at, key=lambda alpha: at[alpha].sharpness)  # the first alpha on ties
        saturated = [alpha for alpha, m in at.items() if m.saturated]
        summary.append(
            {
                "rho": rho,
                "zero_shot": at[0.0].sharpness if 0.0 in at else None,
                "fine_tuned": at[1.0].sharpness if 1.0 in at else None,
                "max_sharpness": at[top].sharpness,
                "max_alpha": top,
                "saturated": bool(saturated),
                "saturated_alphas": saturated,
            }
        )
    return summary


def saturation_advice(doc: dict, name: str, rho: float) -> str:
    """Why the points of dataset ``name`` at ``rho`` of a sharpness report saturate, and
    what to do: the model is at chance without noise, or rho is too large (a smaller one)."""
    if not _noise_saturated(doc, name, rho):
        return "the model is at chance there even without noise; sharpness says nothing"
    return "rho is too large for sharpness to mean anything there; " + _smaller_rho(doc, name, rho)


def _noise_saturated(doc: dict, name: str, rho: float) -> bool:
    """True when the noise (not the model itself) brings a point at ``rho`` to chance."""
    points = [p["metrics"][name] for p in doc["results"]["points"] if p["rho"] == rho]
    return any(m["saturated"] and not m["clean_at_chance"] for m in points)


def _smaller_rho(doc: dict, name: str, rho: float) -> str:
    """A rho to try: the largest of this sweep that did not saturate, else a tenth of ``rho``.

    A tenth is what was measured on the demo's tiny models: rho 0.5 and 1.0 saturated there,
    0.3 and below did not (docs/demo.md); a first step to try, not a guarantee elsewhere.
    """
    rhos = {row["rho"] for row in doc["summary"][name]}
    calm = [r for r in rhos if r < rho and not _noise_saturated(doc, name, r)]
    if calm:
        return f"at --rho {max(calm):g} the noise brought no point of this run to chance"
    return f"try --rho {rho / 10:g}, or a sweep (--rho {rho / 100:g},{rho / 10:g},{rho / 3:.2g})"

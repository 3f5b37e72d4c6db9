"""Adaptive sharpness (Andriushchenko et al., ICML 2023) of the classifier, at any weights w.

Every perturbation is relative to the weights: delta = |w| * u, elementwise.

- ``average``: S = E_u[L(w + |w| u)] - L(w), u ~ N(0, rho^2 I). Noise draw k is a
  function of (seed, k) alone and serves every batch, alpha and rank (common
  random numbers); S is the mean over draws of L_k - L(w), with its standard error.
- ``worst``: max over ||u||_p <= rho of L(w + |w| u) - L(w), by projected gradient
  ascent with momentum and step halving (APGD-style).

Weights are written in place and restored by copy (never by subtracting the
noise back) after every draw, and on error or interruption.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .ascent import Ascent, u_norm
from .config import Progress, RunOptions, SharpnessOptions
from .data import EvalData
from .errors import ConfigError
from .evaluate import Metrics, evaluate, loss_gradient
from .interpolation import CONVENTION, path_between, run_config
from .layers import layer_groups, select_layers
from .models import SCALE_KEYS, ClipClassifier, ZeroShotHeads, is_image_key, is_text_key
from .pipeline import Workspace
from .report import Report

Step = Callable[[], None]


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


def perturbed_keys(classifier: ClipClassifier, options: SharpnessOptions) -> list[str]:
    """The parameters delta moves, in the model's state_dict order.

    The image tower; ``logit_scale`` and a stored head with ``include_head``; the text
    tower with ``include_text``; restricted to ``layers``, less those matching ``exclude``.
    """
    parameters = {name for name, _ in classifier.model.named_parameters()}
    if classifier.head is not None:
        parameters |= {"head.weight", "head.bias"}
    keys = [k for k in classifier.tensors if k in parameters and _perturbable(k, options)]
    if options.layers:
        keys = restrict_to_layers(keys, options.layers)
    if options.exclude:
        try:
            pattern = re.compile(options.exclude)
        except re.error as e:
            raise ConfigError(f"--exclude {options.exclude!r} is not a valid regex ({e})") from e
        keys = [k for k in keys if not pattern.search(k)]
    if not keys:
        raise ConfigError("nothing left to perturb; loosen --exclude or --layers")
    return keys


def _perturbable(key: str, options: SharpnessOptions) -> bool:
    if is_image_key(key):
        return True
    if key in SCALE_KEYS or key.startswith("head."):
        return options.include_head
    return options.include_text and is_text_key(key)


def restrict_to_layers(keys: Sequence[str], spec: str) -> list[str]:
    """The keys of the layer groups named by ``spec`` (comma list of names or globs)."""
    groups = layer_groups(keys)
    try:
        chosen = select_layers(groups, spec)
    except ConfigError as e:
        raise ConfigError(f"{e} (--include-text and --include-head add more)") from e
    kept = {key for group in chosen for key in groups[group]}
    return [key for key in keys if key in kept]


class Perturbation:
    """Writes w + |w| * u into the live tensors of ``keys``; restores w exactly, by copy.

    A context manager: on exit, also on error or Ctrl-C, every tensor is copied back
    from the clone taken on entry.
    """

    def __init__(self, classifier: ClipClassifier, heads: ZeroShotHeads, keys: Sequence[str]):
        self.classifier = classifier
        self.heads = heads
        self.keys = list(keys)
        self.moves_text = any(is_text_key(key) for key in self.keys)
        self.original: dict[str, torch.Tensor] = {}

    def __enter__(self) -> Perturbation:
        self.original = {key: self.classifier.tensors[key].clone() for key in self.keys}
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def magnitude(self, key: str) -> torch.Tensor:
        """|w| in fp32: the scale of the adaptive perturbation."""
        return self.original[key].float().abs()

    @torch.no_grad()
    def write(self, u: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Write w + |w| * u for each (key, u) pair (fp32 maths, one rounding into the model)."""
        for key, value in u:
            w = self.original[key].float()
            self.classifier.tensors[key].copy_(w + w.abs() * value)
        if self.moves_text:
            self.heads.invalidate()

    @torch.no_grad()
    def restore(self) -> None:
        for key, w in self.original.items():
            self.classifier.tensors[key].copy_(w)
        if self.moves_text:
            self.heads.invalidate()


def noise_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator of noise draw ``draw``: a function of (seed, draw) alone."""
    entropy = [seed & 0xFFFF_FFFF_FFFF_FFFF, draw]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def gaussian_u(
    shapes: Mapping[str, torch.Size], rho: float, generator: torch.Generator, device
) -> Iterable[tuple[str, torch.Tensor]]:
    """rho * N(0, I) for each key in turn, drawn on the CPU (so the same on every device)."""
    for key, shape in shapes.items():
        yield key, (rho * torch.randn(shape, generator=generator)).to(device)


@dataclass(frozen=True)
class Probe:
    """What a measurement perturbs and evaluates: the working classifier, around its weights."""

    classifier: ClipClassifier
    heads: ZeroShotHeads
    keys: list[str]  # the perturbed tensors
    batch_size: int

    def evaluate(self, data: EvalData) -> Metrics:
        return evaluate(self.classifier, self.heads, data, self.batch_size)

    def gradient(self, data: EvalData) -> tuple[Metrics, dict[str, torch.Tensor]]:
        return loss_gradient(self.classifier, self.heads, data, self.batch_size, self.keys)

    def perturbation(self) -> Perturbation:
        return Perturbation(self.classifier, self.heads, self.keys)


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
    on_step: Step | None = None,
) -> dict[str, SharpnessMetrics]:
    """Sharpness of the classifier's current weights, perturbing ``keys`` only.

    Average case: ``options.iterations`` draws shared by all datasets; worst case: one
    ascent per dataset. ``on_step`` is called after every draw or ascent step. The
    weights are bit-identical afterwards, also when an error interrupts the measurement.
    Returns dataset name -> metrics.
    """
    probe = Probe(classifier, heads, list(keys), batch_size)
    if options.kind == "average":
        return average_sharpness(probe, datasets, rho, options.iterations, seed, on_step)
    return {
        d.name: worst_sharpness(probe, d, rho, options.norm, options.iterations, on_step)
        for d in datasets
    }


def average_sharpness(
    probe: Probe,
    datasets: Sequence[EvalData],
    rho: float,
    iterations: int,
    seed: int,
    on_step: Step | None = None,
) -> dict[str, SharpnessMetrics]:
    """E_u[L(w + |w| u)] - L(w), u ~ N(0, rho^2 I), over ``iterations`` draws from (seed, k)."""
    clean = {d.name: probe.evaluate(d) for d in datasets}
    draws: dict[str, list[Metrics]] = {d.name: [] for d in datasets}
    tensors, device = probe.classifier.tensors, probe.classifier.device
    shapes = {key: tensors[key].shape for key in sorted(probe.keys)}  # the draw order
    with probe.perturbation() as perturbation:
        for draw in range(iterations):
            perturbation.write(gaussian_u(shapes, rho, noise_generator(seed, draw), device))
            for d in datasets:
                draws[d.name].append(probe.evaluate(d))
            perturbation.restore()
            if on_step:
                on_step()
    return {d.name: _over_draws(clean[d.name], draws[d.name], d.num_classes) for d in datasets}


def _over_draws(clean: Metrics, draws: Sequence[Metrics], num_classes: int) -> SharpnessMetrics:
    """Means and standard errors over draws of the per-draw differences from the clean model."""
    loss_rise = [m.loss - clean.loss for m in draws]  # exactly 0 each when rho = 0
    error_rise = [m.error - clean.error for m in draws]
    return _sharpness_metrics(
        clean, num_classes,
        loss=statistics.fmean(m.loss for m in draws),
        accuracy=statistics.fmean(m.accuracy for m in draws),
        sharpness=statistics.fmean(loss_rise),
        error_sharpness=statistics.fmean(error_rise),
        stderr=_stderr(loss_rise),
        error_stderr=_stderr(error_rise),
    )  # fmt: skip


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


def at_chance(loss: float, accuracy: float, num_classes: int, num_examples: int) -> bool:
    """Loss >= log C, or accuracy within one binomial standard error of 1/C on N examples."""
    chance = 1.0 / num_classes
    return loss >= math.log(num_classes) or abs(accuracy - chance) <= math.sqrt(
        chance * (1 - chance) / num_examples
    )


def worst_sharpness(
    probe: Probe,
    data: EvalData,
    rho: float,
    norm: str,
    iterations: int,
    on_step: Step | None = None,
) -> SharpnessMetrics:
    """max over ||u||_p <= rho of L(w + |w| u) - L(w), by ``iterations`` ascent steps.

    The loss is the mean over all of ``data``; the reported perturbation is the best
    iterate (or u = 0, the clean model, when no step raised the loss).
    """
    clean = probe.evaluate(data)
    with probe.perturbation() as perturbation:
        ascent = Ascent(perturbation, rho, norm, clean.loss)
        best_u, last_u = ascent.run(lambda: probe.gradient(data), iterations, on_step)
        found = []
        for u in (best_u, last_u):  # the last iterate was never evaluated
            perturbation.write(u.items())
            found.append((probe.evaluate(data), u))
    worst, u = max(found, key=lambda pair: pair[0].loss)
    return _sharpness_metrics(
        clean, data.num_classes,
        loss=worst.loss,
        accuracy=worst.accuracy,
        sharpness=worst.loss - clean.loss,
        error_sharpness=worst.error - clean.error,
        stderr=None,
        error_stderr=None,
        delta_norm=u_norm(u, norm),
    )  # fmt: skip


def run_sharpness(
    workspace: Workspace,
    options: RunOptions,
    sharpness: SharpnessOptions,
    *,
    progress: Progress | None = None,
) -> Report:
    """The ``sharpness`` analysis: at every alpha of the path (two checkpoints) or of one model.

    One point per (alpha, rho). Costs (iterations + 1) x N forwards per point (average).
    """
    started = time.perf_counter()
    keys = perturbed_keys(workspace.classifier, sharpness)
    pair = "zero_shot" in workspace.checkpoints  # else one model, measured as it is
    path = path_between(workspace, options.path.exclude) if pair else None
    alphas: list[float | None] = list(options.path.alphas) if path else [None]
    per_point = 1 if sharpness.kind == "average" else len(workspace.datasets)
    total = len(alphas) * len(sharpness.rhos) * sharpness.iterations * per_point
    ticks = itertools.count(1)
    on_step = (lambda: progress("sharpness", next(ticks), total)) if progress else None
    points = []
    try:
        for alpha in alphas:
            if path:
                path.set_alpha(alpha)
            for rho in sharpness.rhos:
                metrics = measure_sharpness(
                    workspace.classifier, workspace.heads, workspace.datasets, keys, sharpness,
                    rho=rho, batch_size=options.eval.batch_size, seed=options.data.seed,
                    on_step=on_step,
                )  # fmt: skip
                points.append(SharpnessPoint(alpha, rho, metrics))
    finally:
        if path:
            workspace.classifier.load(workspace.checkpoints["fine_tuned"].tensors)
            workspace.heads.invalidate()
    results = {"convention": CONVENTION if path else None, "kind": sharpness.kind,
               "points": [p.to_dict() for p in points]}  # fmt: skip
    return Report(
        command="sharpness",
        inputs=workspace.inputs(),
        config=_config(workspace, options, sharpness, keys, alphas if path else None),
        results=results,
        summary={d.name: sharpness_summary(points, d.name) for d in workspace.datasets},
        seconds=time.perf_counter() - started,
    )


def _config(workspace, options, sharpness: SharpnessOptions, keys, alphas) -> dict:
    """The run's config, the sharpness options (``exclude``: never perturbed) and what moves."""
    return (
        run_config(workspace, options)
        | asdict(sharpness)
        | {
            "alphas": alphas,
            "path_exclude": options.path.exclude,
            "perturbed_layers": list(layer_groups(keys)),
            "perturbed_tensors": len(keys),
            "perturbed_parameters": sum(workspace.classifier.tensors[k].numel() for k in keys),
        }
    )


def sharpness_summary(points: Sequence[SharpnessPoint], dataset: str) -> list[dict]:
    """Per rho: sharpness at alpha = 0 and 1 (when measured), the largest and its alpha,
    and the alphas whose perturbed model is at chance (``saturated``)."""
    summary = []
    for rho in sorted({p.rho for p in points}):
        at = {p.alpha: p.metrics[dataset] for p in points if p.rho == rho}
        top = max(at, key=lambda alpha: at[alpha].sharpness)  # the first alpha on ties
        saturated = [alpha for alpha, m in at.items() if m.saturated]
        summary.append({
            "rho": rho,
            "zero_shot": at[0.0].sharpness if 0.0 in at else None,
            "fine_tuned": at[1.0].sharpness if 1.0 in at else None,
            "max_sharpness": at[top].sharpness,
            "max_alpha": top,
            "saturated": bool(saturated),
            "saturated_alphas": saturated,
        })  # fmt: skip
    return summary

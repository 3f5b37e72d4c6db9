"""Rank statistics over a handful of models: Spearman, Kendall tau-b, a bootstrap
interval and a permutation p-value, each with the reason when it cannot be computed.

A study has 5-20 fine-tuned models; a point estimate of a rank correlation over so
few says little, so every correlation comes with a percentile bootstrap interval
over models and a two-sided p-value of ``|rho| >= |rho observed|`` under random
pairing. Randomness is seeded: each statistic draws from its own
``numpy.random.default_rng(seed)``, so every measure is resampled alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..options import StatisticsOptions

EXACT_UP_TO = 8  # n <= this: the p-value over all n! pairings (40320 at n = 8)
MIN_MODELS = 3  # fewer pairs rank nothing
MIN_BOOTSTRAP = 5  # fewer models: resamples repeat so few of them that the interval means nothing


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties given their average rank. Shape kept."""
    values = np.asarray(values, dtype=float)
    below = (values[..., :, None] > values[..., None, :]).sum(-1)  # (..., n)
    equal = (values[..., :, None] == values[..., None, :]).sum(-1)
    return below + (equal + 1) / 2


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair; NaN where a row is constant. (R, n) -> (R,)."""
    dx = x - x.mean(-1, keepdims=True)
    dy = y - y.mean(-1, keepdims=True)
    scale = np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (dx * dy).sum(-1) / np.where(scale > 0, scale, 1), np.nan)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the average ranks; None when n < 3 or one is constant."""
    if len(x) < MIN_MODELS:
        return None
    rho = float(_pearson_rows(average_ranks(x)[None], average_ranks(y)[None])[0])
    return None if math.isnan(rho) else rho


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)) over the n0 pairs, n1 (n2) of them
    tied in x (y); None when n < 3 or one is constant."""
    if len(x) < MIN_MODELS:
        return None
    sx = np.sign(np.subtract.outer(np.asarray(x, float), np.asarray(x, float)))
    sy = np.sign(np.subtract.outer(np.asarray(y, float), np.asarray(y, float)))
    upper = np.triu_indices(len(x), k=1)
    untied = float((sx[upper] != 0).sum()) * float((sy[upper] != 0).sum())
    return float((sx[upper] * sy[upper]).sum()) / math.sqrt(untied) if untied else None


def bootstrap_interval(
    x: Sequence[float], y: Sequence[float], options: StatisticsOptions, seed: int = 0
) -> tuple[float, float, int] | None:
    """Percentile interval of Spearman's rho over models resampled with replacement.

    The indices are drawn at once, ``default_rng(seed).integers(0, n, size=(bootstrap, n))``,
    one resample a row; resamples in which x or y is constant have no rho and are left out.
    The interval is ``numpy.quantile`` (linear) at (1 - confidence) / 2 and its complement
    of the rest. Returns ``(low, high, resamples kept)``, or None when none is left.
    """
    n = len(x)
    rows = np.random.default_rng(seed).integers(0, n, size=(options.bootstrap, n))
    xs, ys = np.asarray(x, float)[rows], np.asarray(y, float)[rows]
    rhos = _pearson_rows(average_ranks(xs), average_ranks(ys))
    kept = rhos[~np.isnan(rhos)]
    if kept.size == 0:
        return None
    tail = (1 - options.confidence) / 2
    low, high = np.quantile(kept, [tail, 1 - tail])
    return float(low), float(high), int(kept.size)


def permutation_p(
    x: Sequence[float], y: Sequence[float], options: StatisticsOptions, seed: int = 0
) -> tuple[float, str]:
    """Two-sided p-value of Spearman's rho under random pairing of x with y.

    n <= 8: exact, the share of all n! pairings with ``|rho| >= |rho observed|``. Larger n:
    ``(1 + hits) / (1 + permutations)`` over random pairings drawn by
    ``default_rng(seed).permuted`` (never 0: the observed pairing is one of them).
    """
    rx, ry = average_ranks(x), average_ranks(y)
    observed = abs(float(_pearson_rows(rx[None], ry[None])[0]))
    n = len(x)
    if n <= EXACT_UP_TO:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        base = np.tile(np.arange(n), (options.permutations, 1))
        orders = np.random.default_rng(seed).permuted(base, axis=1)
    rhos = np.abs(_pearson_rows(np.broadcast_to(rx, orders.shape), ry[orders]))
    hits = int((rhos >= observed - 1e-12).sum())
    if n <= EXACT_UP_TO:
        return hits / len(orders), "exact"
    return (1 + hits) / (1 + len(orders)), "permutation"


def correlate(
    x: Sequence[float], y: Sequence[float], options: StatisticsOptions, seed: int = 0
) -> dict[str, Any]:
    """Every statistic of one measure ``x`` against the target ``y``, one value per model.

    Null fields come with ``reason``: fewer than 3 models, or x or y the same for all.
    The interval needs 5 models (null below). ``excludes_zero``: it lies wholly above or
    below 0.
    """
    found: dict[str, Any] = {
        "spearman": None,
        "kendall_tau_b": None,
        "interval": None,
        "resamples": 0,
        "excludes_zero": False,
        "p_value": None,
        "p_method": None,
        "reason": None,
    }
    if len(x) < MIN_MODELS:
        return found | {"reason": f"fewer than {MIN_MODELS} models ({len(x)})"}
    for values, what in ((x, "the measure"), (y, "the OOD gain")):
        if len(set(values)) == 1:
            return found | {"reason": f"{what} is the same for every model"}
    interval = bootstrap_interval(x, y, options, seed) if len(x) >= MIN_BOOTSTRAP else None
    p_value, method = permutation_p(x, y, options, seed)
    found |= {
        "spearman": spearman(x, y),
        "kendall_tau_b": kendall_tau_b(x, y),
        "p_value": p_value,
        "p_method": method,
    }
    if interval is not None:
        low, high, kept = interval
        found |= {"interval": [low, high], "resamples": kept, "excludes_zero": low > 0 or high < 0}
    return found

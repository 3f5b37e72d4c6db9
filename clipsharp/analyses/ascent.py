"""Projected gradient ascent for worst-case sharpness (APGD-style, Croce and Hein 2020).

The variable is u, the perturbation relative to the weights (delta = |w| * u),
kept in the ball ||u||_p <= rho (p = 2 or infinity) over all perturbed tensors
jointly. Steps follow the gradient direction (normalised for l2, its sign for
linf) with momentum; the step is halved, restarting from the best point, at
APGD's checkpoints when too few steps improved the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..core.perturb import Perturbation

MOMENTUM = 0.75  # APGD: weight of the new step; 1 - MOMENTUM goes to the previous one
STALL_RATIO = 0.75  # APGD: halve the step when fewer steps than this fraction improved
Step = Callable[[], None]


def u_norm(u: Mapping[str, torch.Tensor], norm: str) -> float:
    """||u||_p over all tensors jointly (p = 2 or infinity), accumulated in fp64."""
    if norm == "linf":
        return max((float(v.abs().max()) for v in u.values() if v.numel()), default=0.0)
    return math.sqrt(
        sum(float(torch.linalg.vector_norm(v, dtype=torch.float64)) ** 2 for v in u.values())
    )


def _project(u: dict[str, torch.Tensor], rho: float, norm: str) -> dict[str, torch.Tensor]:
    """The nearest point of the ball ||u||_p <= rho."""
    if norm == "linf":
        return {k: v.clamp(-rho, rho) for k, v in u.items()}
    size = u_norm(u, norm)
    return u if size <= rho else {k: v * (rho / size) for k, v in u.items()}


class Ascent:
    """Projected gradient ascent in u with momentum and APGD's step-halving schedule."""

    def __init__(self, perturbation: Perturbation, rho: float, norm: str, clean_loss: float):
        self.perturbation, self.rho, self.norm = perturbation, rho, norm
        self.step = 2.0 * rho  # APGD's first step: the ball's diameter
        self.best_loss = clean_loss

    def run(self, gradient, iterations: int, on_step: Step | None):
        """Returns (best u, last u) after ``iterations`` gradient steps from u = 0."""
        orig = self.perturbation.original
        u = {k: torch.zeros(w.shape, device=w.device) for k, w in orig.items()}
        previous, best = u, u
        checks, last_check, improved = _checkpoints(iterations), 0, 0
        step_then, best_then = self.step, self.best_loss
        for i in range(iterations):
            self.perturbation.write(u.items())
            metrics, grad = gradient()
            if metrics.loss > self.best_loss:
                self.best_loss, best, improved = metrics.loss, u, improved + 1
            u, previous = self._update(u, previous, grad, first=i == 0), u
            if on_step:
                on_step()
            if i + 1 in checks:
                stalled = improved < STALL_RATIO * (i + 1 - last_check) or (
                    self.step == step_then and self.best_loss == best_then
                )
                step_then, best_then, last_check, improved = self.step, self.best_loss, i + 1, 0
                if stalled:  # halve the step and restart from the best point
                    self.step, u, previous = self.step / 2, best, best
        return best, u

    def _update(self, u, previous, grad, *, first: bool) -> dict[str, torch.Tensor]:
        """z = P(u + step * direction), then u' = P(u + a (z - u) + (1 - a)(u - previous))."""
        slope = {k: grad[k] * self.perturbation.magnitude(k) for k in u}  # dL/du = |w| dL/dw
        if self.norm == "linf":
            direction = {k: g.sign() for k, g in slope.items()}
        else:
            size = u_norm(slope, "l2") + 1e-12
            direction = {k: g / size for k, g in slope.items()}
        z = _project({k: u[k] + self.step * direction[k] for k in u}, self.rho, self.norm)
        a = 1.0 if first else MOMENTUM
        moved = {k: u[k] + a * (z[k] - u[k]) + (1 - a) * (u[k] - previous[k]) for k in u}
        return _project(moved, self.rho, self.norm)


def _checkpoints(iterations: int) -> set[int]:
    """APGD's step-size checks: after 22% of the steps, then at gaps shrinking to 6%."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    return {math.ceil(f * iterations) for f in fractions[1:]} & set(range(1, iterations))

"""Weights along the WiSE-FT path: theta(alpha) written in place into the working model."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..progress import Where
from .checkpoint import Checkpoint
from .engine import Point
from .models import ClipClassifier
from .workspace import Workspace


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
    zero_shot, fine_tuned = _pair(workspace)
    keys = moving_keys(zero_shot, fine_tuned, exclude)
    ends = endpoints(zero_shot, fine_tuned, keys, workspace.device)
    return WeightPath(workspace.classifier, ends)


class WeightPath:
    """Writes theta(alpha) into the working model, in place, for the endpoints' keys."""

    def __init__(self, classifier: ClipClassifier, ends: Endpoints):
        self.classifier = classifier
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

    def point(self, alpha: float) -> Point:
        """The whole path at alpha, as an engine point."""
        return Point(
            key=alpha_key(alpha),
            write=lambda: self.set_alpha(alpha),
            where=Where(alpha=alpha),
        )


def alpha_key(alpha: float) -> str:
    return repr(alpha)


def with_endpoints(alphas: Sequence[float]) -> list[float]:
    """The alphas plus 0 and 1, sorted: every summary is measured against the endpoints."""
    return sorted(set(alphas) | {0.0, 1.0})


CONVENTION = "theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned"


def _pair(workspace: Workspace) -> tuple[Checkpoint, Checkpoint]:
    return workspace.checkpoints["zero_shot"], workspace.checkpoints["fine_tuned"]

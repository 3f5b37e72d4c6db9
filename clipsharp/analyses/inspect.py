"""``inspect``: architecture, parameter counts, layer groups, per-layer change of a pair."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..core.checkpoint import Checkpoint, has_text_tower
from ..core.layers import layer_groups, tower_of
from ..core.workspace import describe_checkpoints, open_checkpoints
from ..errors import ConfigError
from ..options import GRANULARITIES
from ..reports.report import Report


def inspect_roles(paths: Sequence[Path], granularity: str = "block") -> dict[str, Path]:
    """``{"model": path}`` or ``{"zero_shot", "fine_tuned"}``; refuses other counts and an
    unknown granularity, before anything is read."""
    if not 1 <= len(paths) <= 2:
        raise ConfigError("inspect takes one checkpoint or a pair (zero-shot, fine-tuned)")
    if granularity not in GRANULARITIES:
        raise ConfigError(
            f"--granularity {granularity!r} is unknown; choose block, module or tensor"
        )
    roles = ("zero_shot", "fine_tuned") if len(paths) == 2 else ("model",)
    return dict(zip(roles, paths, strict=True))


def run_inspect(
    paths: Sequence[Path],
    *,
    model: str | None = None,
    granularity: str = "block",
    allow_nonfinite: bool = False,
) -> Report:
    """Describe one checkpoint, or a pair with the relative change of every layer group.

    The relative change of a group is ||ft - zs|| / ||zs|| over its floating tensors
    (2-norm of the concatenated entries).
    """
    started = time.perf_counter()
    roles = inspect_roles(paths, granularity)
    loaded, arch, _ = open_checkpoints(roles, model=model, allow_nonfinite=allow_nonfinite)
    checkpoints = list(loaded.values())
    layers = _layers(checkpoints, granularity)
    tensors = checkpoints[-1].tensors
    return Report(
        command="inspect",
        inputs=describe_checkpoints(loaded, arch),
        config={"granularity": granularity, "model_config": arch.model_cfg},
        results={"layers": layers},
        summary={
            "model": arch.name,
            "parameters": sum(t.numel() for t in tensors.values()),
            "tensors": len(tensors),
            "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()}),
            "head": _head(tensors),
            "text_tower": has_text_tower(tensors),
            "source_layout": checkpoints[-1].metadata.get("clipsharp.layout"),  # convert's
            "layers": len(layers),
            "changed_layers": sum(1 for row in layers if row.get("relative_change")),
        },
        seconds=time.perf_counter() - started,
    )


def _head(tensors) -> str:
    """``stored``, ``zero-shot`` (built from the text tower), or ``none`` (image-tower-only
    without a stored head: no analysis can classify with it)."""
    if "head.weight" in tensors:
        return "stored"
    return "zero-shot" if has_text_tower(tensors) else "none"


def _layers(checkpoints: list[Checkpoint], granularity: str) -> list[dict]:
    rows = []
    for layer, keys in layer_groups(checkpoints[-1].tensors, granularity).items():
        row = {
            "layer": layer,
            "tower": tower_of(layer),
            "tensors": keys,
            "parameters": sum(checkpoints[-1].tensors[k].numel() for k in keys),
        }
        if len(checkpoints) == 2:
            row["relative_change"] = relative_change(checkpoints[0], checkpoints[1], keys)
        rows.append(row)
    return rows


def relative_change(zero_shot: Checkpoint, fine_tuned: Checkpoint, keys: Sequence[str]) -> float:
    """||ft - zs|| / ||zs|| over the floating tensors ``keys`` (0 when nothing changed)."""
    diff = base = 0.0
    for key in keys:
        zs = zero_shot.tensors[key]
        if not zs.is_floating_point():
            continue
        zs64, ft64 = zs.double(), fine_tuned.tensors[key].double()
        diff += float((ft64 - zs64).pow(2).sum())
        base += float(zs64.pow(2).sum())
    if diff == 0.0:
        return 0.0
    return (diff / base) ** 0.5 if base > 0 else float("inf")

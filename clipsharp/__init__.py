"""clipsharp: why robust fine-tuning (WiSE-FT) of CLIP succeeds or fails.

The public API is importable from here; heavy modules (torch, open_clip) load
on first use, so ``import clipsharp`` and ``clipsharp --help`` stay instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "ClipsharpError": "errors",
    "CheckpointError": "errors",
    "DatasetError": "errors",
    "ConfigError": "errors",
    "RunOptions": "config",
    "DataOptions": "config",
    "EvalOptions": "config",
    "PathOptions": "config",
    "parse_alphas": "config",
    "DatasetSpec": "data",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "open_workspace": "pipeline",
    "evaluate": "engine",
    "Engine": "engine",
    "Point": "engine",
    "Analysis": "analysis",
    "run": "analysis",
    "Interpolation": "interpolation",
    "Layerwise": "layerwise",
    "Sharpness": "sharpness",
    "Stragglers": "stragglers",
    "interpolate_weights": "interpolation",
    "run_interpolation": "interpolation",
    "run_inspect": "inspection",
    "LayerwiseOptions": "layerwise",
    "run_layerwise": "layerwise",
    "SharpnessOptions": "config",
    "measure_sharpness": "sharpness",
    "run_sharpness": "sharpness",
    "StragglerOptions": "stragglers",
    "run_stragglers": "stragglers",
    "run_study": "study",
    "run_sweep": "sweep",
    "SweepOptions": "sweep",
    "StatisticsOptions": "statistics",
    "PruneOptions": "prune",
    "run_prune": "prune",
    "run_checks": "check",
    "convert_checkpoint": "convert",
    "build_demo": "demo",
    "figures": "plots",
    "save_figures": "plots",
    "layer_groups": "layers",
    "Report": "report",
    "read_report": "report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'clipsharp' has no attribute {name!r}")

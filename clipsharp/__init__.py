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
    "RunOptions": "options",
    "DataOptions": "options",
    "EvalOptions": "options",
    "PathOptions": "options",
    "parse_alphas": "options",
    "DatasetSpec": "data.specs",
    "load_checkpoint": "core.checkpoint",
    "save_checkpoint": "core.checkpoint",
    "open_workspace": "core.workspace",
    "evaluate": "core.engine",
    "Engine": "core.engine",
    "Point": "core.engine",
    "Analysis": "core.analysis",
    "run": "core.analysis",
    "Interpolation": "analyses.interpolate",
    "Layerwise": "analyses.layerwise",
    "Sharpness": "analyses.sharpness",
    "Stragglers": "analyses.stragglers",
    "interpolate_weights": "core.weights",
    "run_interpolation": "analyses.interpolate",
    "run_inspect": "analyses.inspect",
    "LayerwiseOptions": "options",
    "run_layerwise": "analyses.layerwise",
    "SharpnessOptions": "options",
    "measure_sharpness": "analyses.sharpness",
    "run_sharpness": "analyses.sharpness",
    "StragglerOptions": "options",
    "run_stragglers": "analyses.stragglers",
    "run_study": "reports.correlations",
    "run_sweep": "analyses.study",
    "SweepOptions": "options",
    "StatisticsOptions": "options",
    "run_prune": "analyses.prune",
    "run_checks": "reports.gates",
    "convert_checkpoint": "analyses.convert",
    "build_demo": "demo.build",
    "figures": "reports.plot",
    "save_figures": "reports.plot",
    "layer_groups": "core.layers",
    "Report": "reports.report",
    "read_report": "reports.report",
    "InputOptions": "options",
    "Inputs": "core.workspace",
    "PruneOptions": "options",
    "prune": "analyses.prune",
    "MergeOptions": "options",
    "merge": "analyses.merge",
    "StudyOptions": "options",
    "study": "analyses.study",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'clipsharp' has no attribute {name!r}")

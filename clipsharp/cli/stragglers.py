"""``clipsharp stragglers``: the layers whose sharpness singles them out."""

from __future__ import annotations

from dataclasses import fields

from .. import options as opt
from ..options import (
    InputOptions,
    PathOptions,
    Rendering,
    RunOptions,
    SharpnessOptions,
    StragglerOptions,
)
from .output import analyse
from .params import offer
from .sharpness import _roles

PATH_FIELDS = [f.name for f in fields(PathOptions)]  # stragglers measures no path


@offer(*(f"run.path.{name}" for name in PATH_FIELDS), defaults={"run.data.limit": 1024})
def command(
    checkpoints: opt.Checkpoints,
    *,
    output: opt.Output,
    resume: opt.Resume,
    rule: StragglerOptions,
    inputs: InputOptions,
    run: RunOptions,
    sharpness: SharpnessOptions,
    rendering: Rendering,
) -> None:
    """Layer-wise sharpness and its outliers, the straggler layers (the paper's Fig. 4).

    Each layer group of the image tower (the text tower too with --include-text)
    is perturbed alone; its sharpness is measured on the fine-tuned model and,
    for reference, on the zero-shot one. Stragglers: robust z-score above --z
    within their tower, or the --top-k highest.

    Example:

        clipsharp stragglers zs.safetensors ft.safetensors \\
            --ood data/shifted -o stragglers.json
    """
    from ..analyses.stragglers import run_stragglers

    analyse(
        run_stragglers,
        _roles(checkpoints),
        inputs,
        run,
        sharpness,
        rule,
        output=output,
        resume=resume,
        form=rendering.format,
    )

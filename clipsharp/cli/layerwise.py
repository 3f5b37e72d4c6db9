"""``clipsharp layerwise``: which layers make or break the interpolation."""

from __future__ import annotations

from .. import options as opt
from ..options import InputOptions, LayerwiseOptions, Rendering, RunOptions
from .output import analyse, gate
from .params import offer


@offer(
    "run.path.failure_threshold",
    helps={"fail_on": "Exit 1 after writing the report when a layer collapses: collapse."},
)
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    *,
    output: opt.Output,
    resume: opt.Resume,
    fail_on: opt.FailOn,
    inputs: InputOptions,
    run: RunOptions,
    layerwise: LayerwiseOptions,
    rendering: Rendering,
) -> None:
    """Move one layer at a time between zero-shot and fine-tuned weights (the paper's Fig. 2).

    For each layer group and alpha, every other layer holds the background model.
    Reports per layer and dataset the gain, depth and barrier of the layer's path
    and whether it collapses. Layers equal in both checkpoints are listed as
    unchanged and not evaluated.

    Example:

        clipsharp layerwise zs.safetensors ft.safetensors \\
            --ood data/shifted --alphas 0,0.5,1
    """
    from ..analyses.layerwise import run_layerwise

    opt.check_fail_on(fail_on, "collapse")
    report = analyse(
        run_layerwise,
        {"zero_shot": zero_shot, "fine_tuned": fine_tuned},
        inputs,
        run,
        layerwise,
        output=output,
        resume=resume,
        form=rendering.format,
    )
    gate(report, fail_on)

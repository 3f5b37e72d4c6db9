"""``clipsharp interpolate``: accuracy and loss along the WiSE-FT path."""

from __future__ import annotations

from .. import options as opt
from ..options import InputOptions, Rendering, RunOptions
from .output import analyse, gate
from .params import offer


@offer(
    helps={
        "inputs.ood": "Out-of-distribution dataset SOURCE[:SPLIT]; repeat for several. "
        "Failure mode is judged on these.",
        "fail_on": "Exit 1 after writing the report when an OOD set fails: failure-mode.",
    }
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
    rendering: Rendering,
) -> None:
    """Accuracy and loss along theta(alpha) = (1 - alpha) zero_shot + alpha fine_tuned.

    Reports, per dataset, the best alpha, the gain over zero-shot, the depth and
    barrier of the loss along the path, and (OOD sets) whether robust
    fine-tuning fails: no alpha beats the zero-shot model.

    Example:

        clipsharp interpolate zs.safetensors ft.safetensors \\
            --id data/in_dist --ood data/shifted -o path.json
    """
    from ..analyses.interpolate import run_interpolation

    opt.check_fail_on(fail_on, "failure-mode")
    report = analyse(
        run_interpolation,
        {"zero_shot": zero_shot, "fine_tuned": fine_tuned},
        inputs,
        run,
        output=output,
        resume=resume,
        form=rendering.format,
    )
    gate(report, fail_on)

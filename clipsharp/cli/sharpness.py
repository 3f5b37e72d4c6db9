"""``clipsharp sharpness``: adaptive average (or worst-case) sharpness along the path."""

from __future__ import annotations

from .. import options as opt
from ..errors import ConfigError
from ..options import InputOptions, Rendering, RunOptions, SharpnessOptions
from .output import analyse
from .params import offer


@offer(
    "run.path.exclude",
    "run.path.failure_threshold",
    defaults={"run.data.limit": 1024},
    helps={
        "run.path.alphas": "Points of the path (two checkpoints): a list 0,0.5,1 or a range "
        "start:stop:step (inclusive), measured exactly as given."
    },
)
def command(
    checkpoints: opt.Checkpoints,
    *,
    output: opt.Output,
    resume: opt.Resume,
    inputs: InputOptions,
    run: RunOptions,
    sharpness: SharpnessOptions,
    rendering: Rendering,
) -> None:
    """Adaptive sharpness along the path, or of one model (the paper's Fig. 3).

    Average (Andriushchenko et al., 2023): E[L(w + delta)] - L(w) with
    delta ~ N(0, rho^2 |w|^2), over --iterations noise draws shared by every
    alpha. Worst: the largest loss rise with ||delta / |w|||_p <= rho. Perturbs
    the image tower; the zero-shot head stays fixed. Weights are restored
    exactly after every draw.

    Example:

        clipsharp sharpness zs.safetensors ft.safetensors \\
            --ood data/shifted -o sharp.json
    """
    from ..analyses.sharpness import run_sharpness

    analyse(
        run_sharpness,
        _roles(checkpoints),
        inputs,
        run,
        sharpness,
        output=output,
        resume=resume,
        form=rendering.format,
    )


def _roles(checkpoints: list) -> dict:
    if len(checkpoints) == 1:
        return {"model": checkpoints[0]}
    if len(checkpoints) == 2:
        return {"zero_shot": checkpoints[0], "fine_tuned": checkpoints[1]}
    raise ConfigError(
        f"got {len(checkpoints)} checkpoints; give one (a model) or two (zero-shot, fine-tuned)"
    )

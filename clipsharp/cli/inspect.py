"""``clipsharp inspect``: architecture, parameters and layer groups of one or two checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape

from .. import options as opt
from ..core.outputs import check_output, checkpoint_inputs
from ..options import InputOptions, Rendering, option
from .output import console, finish, guard
from .params import offer


@offer("inputs.id", "inputs.ood")
def command(
    checkpoints: Annotated[
        list[Path],
        option(..., "One checkpoint, or a zero-shot and a fine-tuned one.", argument=True),
    ],
    *,
    granularity: Annotated[
        str, option("block", "Layer groups to list.", metavar="block|module|tensor")
    ],
    output: opt.Output,
    inputs: InputOptions,
    rendering: Rendering,
) -> None:
    """Architecture, parameter count and layer groups (the names --layers accepts).

    With two checkpoints, also the relative change ||ft - zs|| / ||zs|| of
    every layer.

    Example: clipsharp inspect zs.safetensors ft.safetensors
    """
    from ..analyses.inspect import inspect_roles, run_inspect

    roles = inspect_roles(checkpoints, granularity)  # checked before any work
    check_output(output)
    guard([("-o", output)], [*checkpoint_inputs(roles), ("the --model config", inputs.model)])
    report = run_inspect(
        checkpoints,
        model=inputs.model,
        granularity=granularity,
        allow_nonfinite=inputs.allow_nonfinite,
    )
    doc = report.to_dict()
    finish(report, output, console(), form=rendering.format)
    inferred = doc["inputs"]["architecture"].get("inferred")
    if inferred and rendering.format == "table":
        console().print(escape(inferred_text(inferred)), soft_wrap=True)


def inferred_text(inferred: dict) -> str:
    """What the shapes showed and what was assumed, as one paragraph."""
    read = ", ".join(f"{name} {value:g}" for name, value in inferred["read"].items())
    assumed = ", ".join(f"{name} {value}" for name, value in inferred["assumed"].items())
    return f"inferred from tensor shapes: {read}; assumed: {assumed} (if wrong, pass --model)"

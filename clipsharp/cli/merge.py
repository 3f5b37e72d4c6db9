"""``clipsharp merge``: write theta(alpha), the WiSE-FT model, in the inputs' own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from .. import options as opt
from ..core.outputs import check_output, checkpoint_inputs
from ..options import InputOptions, MergeOptions, Rendering, option
from .output import console, finish, guard
from .params import offer


@offer("inputs.id", "inputs.ood")
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    *,
    output: Annotated[
        Path,
        option(
            ...,
            "The merged model: a .safetensors file (open_clip inputs) or a folder "
            "(transformers inputs); never an input.",
            metavar="FILE|FOLDER",
            short="-o",
        ),
    ],
    report: opt.ReportFile,
    merging: MergeOptions,
    inputs: InputOptions,
    rendering: Rendering,
) -> None:
    """Write the merged (WiSE-FT) model (1 - A) * zero-shot + A * fine-tuned.

    In the fine-tuned checkpoint's format: open_clip safetensors with the
    architecture in its metadata, or a transformers folder that
    CLIPModel.from_pretrained loads. The metadata records both inputs'
    sha256, A and how A was chosen.

    Example:

        clipsharp merge zs.safetensors ft.safetensors --alpha best \\
            --from path.json -o wise-ft.safetensors
    """
    from ..analyses.merge import merge

    check_output(report, "--report")
    guard(
        [("-o", output), ("--report", report)],
        [
            *checkpoint_inputs({"zero_shot": zero_shot, "fine_tuned": fine_tuned}),
            ("the --from report", merging.from_report),
            ("the --model config", inputs.model),
        ],
    )
    done = merge(zero_shot, fine_tuned, output, merging, inputs)
    out = console()
    finish(done.report, report, out, flag="--report", form=rendering.format)
    out.print(f"merged model written to {done.output}", markup=False, soft_wrap=True)

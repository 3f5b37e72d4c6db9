"""``clipsharp merge``: write theta(alpha), the WiSE-FT model, in the inputs' own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from ..core.outputs import check_output, checkpoint_inputs
from ..options import InputOptions, option
from . import options as opt
from .output import console, finish, guard
from .params import Rendering, offer

MERGE = "Merge"


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
    alpha: Annotated[
        str,
        option(
            ...,
            "A in [0, 1]: theta = (1 - A) * zero-shot + A * fine-tuned; or 'best': the "
            "best alpha on the in-distribution set of the --from report.",
            metavar="A|best",
            panel=MERGE,
        ),
    ],
    from_report: Annotated[
        Path | None,
        option(
            None,
            "An interpolate report of this pair, for --alpha best.",
            metavar="REPORT",
            panel=MERGE,
            name="--from",
        ),
    ],
    extrapolate: Annotated[
        bool,
        option(
            False,
            "Allow A outside [0, 1]: beyond the fine-tuned model (A > 1) or before the "
            "zero-shot one (A < 0).",
            panel=MERGE,
        ),
    ],
    select_on: Annotated[
        str | None,
        option(
            None,
            "Choose alpha on this dataset of the report instead of its --id set. An OOD "
            "set means choosing on the test set; the output says so.",
            metavar="NAME",
            panel=MERGE,
        ),
    ],
    report: opt.ReportFile,
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
            ("the --from report", from_report),
            ("the --model config", inputs.model),
        ],
    )
    done = merge(
        zero_shot,
        fine_tuned,
        output,
        alpha,
        from_report=from_report,
        select_on=select_on,
        model=inputs.model,
        allow_nonfinite=inputs.allow_nonfinite,
        extrapolate=extrapolate,
    )
    out = console()
    finish(done.report, report, out, flag="--report", form=rendering.format)
    out.print(f"merged model written to {done.output}", markup=False, soft_wrap=True)

"""``clipsharp merge``: write theta(alpha), the WiSE-FT model, in the inputs' own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import InputOptions
from . import options as opt
from .output import checkpoint_inputs, console, guard
from .params import offer

MERGE = "Merge"


@offer("inputs.id", "inputs.ood")
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE|FOLDER",
            help="The merged model: a .safetensors file (open_clip inputs) or a folder "
            "(transformers inputs); never an input.",
            show_default=False,
        ),
    ],
    alpha: Annotated[
        str,
        typer.Option(
            metavar="A|best",
            help="A in [0, 1]: theta = (1 - A) * zero-shot + A * fine-tuned; or 'best': the "
            "best alpha on the in-distribution set of the --from report.",
            show_default=False,
            rich_help_panel=MERGE,
        ),
    ],
    from_report: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="REPORT",
            help="An interpolate report of this pair, for --alpha best.",
            rich_help_panel=MERGE,
        ),
    ] = None,
    extrapolate: Annotated[
        bool,
        typer.Option(
            "--extrapolate",
            help="Allow A outside [0, 1]: beyond the fine-tuned model (A > 1) or before the "
            "zero-shot one (A < 0).",
            rich_help_panel=MERGE,
        ),
    ] = False,
    select_on: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Choose alpha on this dataset of the report instead of its --id set. An OOD "
            "set means choosing on the test set; the output says so.",
            rich_help_panel=MERGE,
        ),
    ] = None,
    *,
    inputs: InputOptions,
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

    guard(
        [("-o", output)],
        [
            *checkpoint_inputs({"zero_shot": zero_shot, "fine_tuned": fine_tuned}),
            ("the --from report", from_report),
            ("the --model config", inputs.model),
        ],
    )
    done = merge(
        zero_shot, fine_tuned, output, alpha, from_report=from_report, select_on=select_on,
        model=inputs.model, allow_nonfinite=inputs.allow_nonfinite, extrapolate=extrapolate,
    )  # fmt: skip
    out = console()
    choice = done.choice
    if choice.on_test_set:
        out.print(
            f"[yellow]warning:[/] alpha {choice.alpha:g} was chosen on the OOD set "
            f"{choice.dataset} (test-set selection): accuracy there is no longer an unbiased "
            "estimate; the metadata records it"
        )
    how = "" if choice.dataset is None else f" ({choice.describe()})"
    kind = "transformers folder" if done.format == "transformers" else "open_clip safetensors"
    out.print(
        f"merged alpha {choice.alpha:g}{how}: {done.tensors} tensors -> {done.output} ({kind}, "
        f"architecture {done.architecture.name} from {done.architecture.source})",
        markup=False,
        soft_wrap=True,
    )

"""``clipsharp merge``: write theta(alpha), the WiSE-FT model, in the inputs' own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape
from rich.table import Table

from ..core.outputs import check_output, checkpoint_inputs
from ..options import InputOptions, MergeOptions, option
from . import options as opt
from .output import console, finish, guard
from .params import Rendering, offer
from .progress import summary_table


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
    choice = done.choice
    if choice.on_test_set:
        out.print(
            f"[yellow]warning:[/] alpha {choice.alpha:g} was chosen on the OOD set "
            f"{escape(choice.dataset)} (test-set selection): accuracy there is no longer an "
            "unbiased estimate; the metadata records it"
        )
    finish(
        done.report,
        merge_table(done.report.to_dict()),
        report,
        out,
        flag="--report",
        form=rendering.format,
    )
    out.print(f"merged model written to {done.output}", markup=False, soft_wrap=True)


def merge_table(doc: dict) -> Table:
    """The merged model: alpha and how it was chosen, the output, its format and architecture."""
    s, architecture = doc["summary"], doc["inputs"]["architecture"]
    kind = {"transformers": "transformers folder", "open_clip": "open_clip safetensors"}
    table = summary_table(f"merge: theta(alpha) at alpha {s['alpha']:g}", ["", ""], [])
    table.add_row("alpha", escape(f"{s['alpha']:g} ({s['selection']})"))
    table.add_row("output", escape(s["output"]))
    table.add_row("format", escape(kind.get(s["format"], s["format"])))
    table.add_row("architecture", escape(f"{architecture['name']} ({architecture['source']})"))
    table.add_row("tensors", str(s["tensors"]))
    return table

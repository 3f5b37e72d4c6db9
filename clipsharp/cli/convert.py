"""``clipsharp convert``: a pickled checkpoint to safetensors, through ``weights_only`` loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import InputOptions
from .output import check_output, console, guard
from .params import offer


@offer("inputs.id", "inputs.ood")
def command(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A pickled PyTorch checkpoint (.pt, .pth, .bin, .ckpt) holding a state_dict, "
            "or a .safetensors file to stamp with its architecture.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="The .safetensors file to write (atomically).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the output if it exists.")
    ] = False,
    *,
    inputs: InputOptions,
) -> None:
    """Convert a pickled checkpoint to safetensors, executing nothing it holds.

    Reads with torch.load(weights_only=True): tensors only; any other object is
    refused. Finds the state_dict (plain, or under state_dict / model_state_dict /
    model), strips a DataParallel 'module.' prefix, checks it against the
    architecture, and writes it with the architecture and provenance in the
    metadata, so no later command needs --model.

    Example:

        clipsharp convert finetuned.pt -o finetuned.safetensors --model ViT-B-32
    """
    from ..analyses.convert import convert_checkpoint

    check_output(str(output))
    guard(
        [("-o", output)],
        [("the input checkpoint", checkpoint), ("the --model config", inputs.model)],
    )
    done = convert_checkpoint(
        checkpoint,
        output,
        model=inputs.model,
        force=force,
        allow_nonfinite=inputs.allow_nonfinite,
    )
    how = [
        f"from {done.wrapper!r}" if done.wrapper else "",
        "'module.' stripped" * done.stripped_prefix,
    ]
    notes = f" ({', '.join(h for h in how if h)})" if any(how) else ""
    console().print(
        f"converted {done.source.name}{notes} -> {done.output}: {done.tensors} tensors, "
        f"{done.parameters:,} parameters, architecture {done.architecture.name} "
        f"(from {done.architecture.source})",
        markup=False,
        soft_wrap=True,
    )

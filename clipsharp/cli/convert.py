"""``clipsharp convert``: pickled checkpoints to safetensors, executing nothing they hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import ConvertOptions, InputOptions, option
from .output import config_read, console
from .params import offer


@offer("inputs.id", "inputs.ood")
def command(
    checkpoints: Annotated[
        list[Path],
        option(
            ...,
            "Pickled PyTorch checkpoints (.pt, .pth, .bin, .ckpt): a state_dict (model "
            "soups'), a whole module (WiSE-FT, task vectors) or a TorchScript archive (OpenAI); "
            "or .safetensors files to stamp with their architecture.",
            argument=True,
        ),
    ],
    *,
    output: Annotated[
        Path,
        option(
            ...,
            "The .safetensors file to write (atomically); with several checkpoints, "
            "the folder to write each into, as NAME.safetensors.",
            metavar="FILE|FOLDER",
            short="-o",
        ),
    ],
    options: ConvertOptions,
    inputs: InputOptions,
) -> None:
    """Convert pickled checkpoints to safetensors, executing nothing they hold.

    Reads with torch.load(weights_only=True), and what it refuses (whole modules,
    bare pickles, TorchScript archives) with an unpickler that turns every class
    and function into an inert stand-in, never called. Finds the state_dict
    (plain, under state_dict / model_state_dict / model, or a module's), strips a
    DataParallel 'module.' prefix, reads the layouts of WiSE-FT, task vectors,
    model soups and OpenAI onto open_clip's keys and stored head, checks it
    against the architecture, and writes it with the architecture and provenance
    in the metadata, so no later command needs --model. One line per checkpoint;
    one that fails does not stop the others, and makes the exit code 2.

    Example:

        clipsharp convert finetuned.pt -o finetuned.safetensors --model ViT-B-32
    """
    from ..analyses.convert import convert

    failed = 0
    for _, done in convert(checkpoints, output, options, inputs, reads=config_read()):
        if isinstance(done, Exception):
            failed += 1
            typer.echo(f"clipsharp convert: error: {done}", err=True)
            continue
        console().print(done.describe(), markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)

"""``clipsharp convert``: pickled checkpoints to safetensors, executing nothing they hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.outputs import check_output
from ..options import InputOptions, option
from .output import console, guard
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
    head: Annotated[
        Path | None,
        option(
            None,
            "A classification head saved apart (a ClassificationHead module, or its "
            "weight and bias) to attach to each checkpoint.",
            metavar="FILE",
        ),
    ],
    force: Annotated[bool, option(False, "Replace the outputs that exist.")],
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
    from ..analyses.convert import convert_each, plan_outputs

    pairs = plan_outputs(checkpoints, output)
    if len(pairs) == 1 and pairs[0][1] == output:
        check_output(str(output))
    guard(
        [("-o", target) for _, target in pairs],
        [
            *[("the input checkpoint", source) for source, _ in pairs],
            ("the --head file", head),
            ("the --model config", inputs.model),
        ],
    )
    options = {
        "model": inputs.model,
        "head": head,
        "force": force,
        "allow_nonfinite": inputs.allow_nonfinite,
    }
    failed = 0
    for _, done in convert_each(pairs, **options):
        if isinstance(done, Exception):
            failed += 1
            typer.echo(f"clipsharp convert: error: {done}", err=True)
            continue
        console().print(_line(done), markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _line(done) -> str:
    how = [
        done.layout,
        f"from {done.wrapper!r}" if done.wrapper else "",
        "'module.' stripped" * done.stripped_prefix,
        f"head from {done.head.name}" if done.head else "",
    ]
    return (
        f"converted {done.source.name} ({', '.join(h for h in how if h)}) -> {done.output}: "
        f"{done.tensors} tensors, {done.parameters:,} parameters, architecture "
        f"{done.architecture.name} (from {done.architecture.source})"
    )

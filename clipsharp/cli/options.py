"""The arguments and CLI-only options several commands share (checkpoints, -o, --resume,
--fail-on), declared once. The analysis options are declared on their dataclasses in
``clipsharp/options.py`` and offered by ``params.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ZeroShot = Annotated[
    Path,
    typer.Argument(
        metavar="ZERO_SHOT",
        help="Zero-shot checkpoint: alpha = 0. A .safetensors file, a transformers CLIPModel "
        "folder, hf-hub:ORG/REPO or pretrained:MODEL/TAG.",
        show_default=False,
    ),
]
FineTuned = Annotated[
    Path,
    typer.Argument(
        metavar="FINE_TUNED",
        help="Fine-tuned checkpoint: alpha = 1. A .safetensors file or a transformers "
        "CLIPModel folder.",
        show_default=False,
    ),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the JSON report to FILE (atomically), or to stdout with '-'. "
        "Default: stdout when it is not a terminal.",
    ),
]

ReportFile = Annotated[
    str | None,
    typer.Option(
        "--report",
        metavar="FILE",
        help="Write the JSON report to FILE, or '-' for stdout (default when piped).",
    ),
]


Checkpoints = Annotated[
    list[Path],
    typer.Argument(
        metavar="CHECKPOINT",
        help="One checkpoint (.safetensors): measure that model; or a zero-shot and a "
        "fine-tuned one: measure at every alpha of the path between them.",
        show_default=False,
    ),
]


Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from the journal beside -o FILE "
        "(same inputs and options only).",
    ),
]


FailOn = Annotated[
    str | None,
    typer.Option(
        "--fail-on",
        metavar="CONDITION",
        help="Exit 1 after writing the report when this condition holds.",
    ),
]


def with_help(option, text: str):
    """``option`` (an ``Annotated[T, typer.Option(...)]``) with the help ``text`` instead: for a
    command on which the shared help would not be true. Declared once, worded per command."""
    import copy
    from typing import get_args

    kind, info = get_args(option)[:2]
    info = copy.copy(info)
    info.help = text
    return Annotated[kind, info]


def check_fail_on(value: str | None, *allowed: str) -> None:
    from ..errors import ConfigError

    if value is not None and value not in allowed:
        raise ConfigError(
            f"--fail-on {value!r} is not a condition here; choose {' or '.join(allowed)}"
        )

"""The arguments and CLI-only options several commands share (checkpoints, -o, --resume,
--fail-on), declared once with :func:`clipsharp.options.option` like the analysis options on
their dataclasses; a command names one as the annotation of its parameter
(``output: opt.Output = None``) and ``params.py`` offers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from ..options import option

ZeroShot = Annotated[
    Path,
    option(
        ...,
        "Zero-shot checkpoint: alpha = 0. A .safetensors file, a transformers CLIPModel "
        "folder, hf-hub:ORG/REPO or pretrained:MODEL/TAG.",
        metavar="ZERO_SHOT",
        argument=True,
    ),
]
FineTuned = Annotated[
    Path,
    option(
        ...,
        "Fine-tuned checkpoint: alpha = 1. A .safetensors file or a transformers CLIPModel folder.",
        metavar="FINE_TUNED",
        argument=True,
    ),
]
Checkpoints = Annotated[
    list[Path],
    option(
        ...,
        "One checkpoint (.safetensors): measure that model; or a zero-shot and a "
        "fine-tuned one: measure at every alpha of the path between them.",
        metavar="CHECKPOINT",
        argument=True,
    ),
]
Output = Annotated[
    str | None,
    option(
        None,
        "Write the JSON report to FILE (atomically), or to stdout with '-'. "
        "Default: stdout when it is not a terminal.",
        metavar="FILE",
        short="-o",
    ),
]
ReportFile = Annotated[
    str | None,
    option(
        None,
        "Write the JSON report to FILE, or '-' for stdout (default when piped).",
        metavar="FILE",
    ),
]
Resume = Annotated[
    bool,
    option(
        False,
        "Continue an interrupted run from the journal beside -o FILE "
        "(same inputs and options only).",
    ),
]
FailOn = Annotated[
    str | None,
    option(None, "Exit 1 after writing the report when this condition holds.", metavar="CONDITION"),
]


def check_fail_on(value: str | None, *allowed: str) -> None:
    from ..errors import ConfigError

    if value is not None and value not in allowed:
        raise ConfigError(
            f"--fail-on {value!r} is not a condition here; choose {' or '.join(allowed)}"
        )

"""Options shared by the analysis commands, declared once.

Every option can also come from ``clipsharp.toml`` (key = long option name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import DataOptions, EvalOptions, PathOptions, RunOptions, parse_alphas

DATA = "Datasets"
EVAL = "Evaluation"
PATH = "Path"

ZeroShot = Annotated[
    Path, typer.Argument(help="Zero-shot checkpoint (.safetensors): alpha = 0.", show_default=False)
]
FineTuned = Annotated[
    Path,
    typer.Argument(help="Fine-tuned checkpoint (.safetensors): alpha = 1.", show_default=False),
]
Id = Annotated[
    str | None,
    typer.Option("--id", help="In-distribution dataset SOURCE[:SPLIT].", rich_help_panel=DATA),
]
Ood = Annotated[
    list[str] | None,
    typer.Option(
        "--ood",
        help="Out-of-distribution dataset SOURCE[:SPLIT]; repeat for several. "
        "Failure mode is judged on these.",
        rich_help_panel=DATA,
    ),
]
ImageColumn = Annotated[
    str | None,
    typer.Option(help="Image column (default: the one Image feature).", rich_help_panel=DATA),
]
LabelColumn = Annotated[
    str | None,
    typer.Option(help="Label column (default: the one ClassLabel feature).", rich_help_panel=DATA),
]
Classnames = Annotated[
    Path | None,
    typer.Option(help="File of class names: one per line, or a JSON list.", rich_help_panel=DATA),
]
Limit = Annotated[
    int | None,
    typer.Option(
        help="Evaluate a seeded subset of at most N examples per dataset.", rich_help_panel=DATA
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of every random choice (--limit subsets).")]
NumWorkers = Annotated[
    int, typer.Option(help="Processes decoding images (0: in this process).", rich_help_panel=DATA)
]
Model = Annotated[
    str | None,
    typer.Option(
        help="Architecture: an open_clip name (ViT-B-32) or a model-config JSON. "
        "Default: the checkpoint's metadata, or open_clip_config.json beside it.",
    ),
]
Templates = Annotated[
    str,
    typer.Option(
        help="Prompt templates of the zero-shot head: openai (80), simple, or a FILE "
        "of lines with {} for the class name.",
        rich_help_panel=EVAL,
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=EVAL)]
BatchSize = Annotated[int, typer.Option(help="Images per forward pass.", rich_help_panel=EVAL)]
Precision = Annotated[
    str,
    typer.Option(help="Working-model dtype: fp32, bf16 or fp16.", rich_help_panel=EVAL),
]
Alphas = Annotated[
    str,
    typer.Option(
        help="Points of the path: a list 0,0.25,1 or a range start:stop:step (inclusive). "
        "0 and 1 are always added.",
        rich_help_panel=PATH,
    ),
]
Extrapolate = Annotated[
    bool, typer.Option("--extrapolate", help="Allow alphas outside [0, 1].", rich_help_panel=PATH)
]
Exclude = Annotated[
    str | None,
    typer.Option(help="Regex of tensor names kept at the fine-tuned value.", rich_help_panel=PATH),
]
FailureThreshold = Annotated[
    float,
    typer.Option(help="An OOD gain at or below this is a failure mode.", rich_help_panel=PATH),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the JSON report to FILE (atomically), or to stdout with '-'. "
        "Default: stdout when it is not a terminal.",
    ),
]
AllowNonfinite = Annotated[
    bool, typer.Option("--allow-nonfinite", help="Accept checkpoints holding NaN or Inf values.")
]
ShowConfig = Annotated[
    bool,
    typer.Option(
        "--show-config",
        help="Print the resolved options (flags, clipsharp.toml, defaults) and exit.",
    ),
]


def dataset_specs(id: str | None, ood: list[str] | None) -> list:
    from ..data import DatasetSpec

    specs = [DatasetSpec.parse(id, role="id")] if id else []
    return specs + [DatasetSpec.parse(text, role="ood") for text in ood or []]


def run_options(
    *,
    image_column: str | None,
    label_column: str | None,
    classnames: Path | None,
    limit: int | None,
    seed: int,
    num_workers: int,
    device: str,
    batch_size: int,
    precision: str,
    templates: str,
    alphas: str = "0:1:0.1",
    extrapolate: bool = False,
    exclude: str | None = None,
    failure_threshold: float = 0.0,
) -> RunOptions:
    return RunOptions(
        data=DataOptions(image_column, label_column, classnames, limit, seed, num_workers),
        eval=EvalOptions(device, batch_size, precision, templates),
        path=PathOptions(parse_alphas(alphas), exclude, extrapolate, failure_threshold),
    )

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
Id = Annotated[
    str | None,
    typer.Option(
        "--id", metavar="SPEC", help="In-distribution dataset SOURCE[:SPLIT].", rich_help_panel=DATA
    ),
]
Ood = Annotated[
    list[str] | None,
    typer.Option(
        "--ood",
        metavar="SPEC",
        help="Out-of-distribution dataset SOURCE[:SPLIT]; repeat for several.",
        rich_help_panel=DATA,
    ),
]
ImageColumn = Annotated[
    str | None,
    typer.Option(
        metavar="NAME", help="Image column (default: the one Image feature).", rich_help_panel=DATA
    ),
]
LabelColumn = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Label column (default: the one ClassLabel feature).",
        rich_help_panel=DATA,
    ),
]
Classnames = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="File of class names: one per line, or a JSON list.",
        rich_help_panel=DATA,
    ),
]
Limit = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Evaluate a seeded subset of at most N examples per dataset.",
        rich_help_panel=DATA,
    ),
]
DataCache = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        help="Keep the preprocessed images in this folder, keyed by the dataset's fingerprint "
        "(content, split, columns, subset, transform): later runs skip decoding. "
        "Float32 tensors: about N x 3 x H x W x 4 bytes per dataset.",
        rich_help_panel=DATA,
    ),
]
Seed = Annotated[
    int, typer.Option(metavar="N", help="Seed of every random choice (--limit subsets).")
]
NumWorkers = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Processes decoding images while the model computes (0: in this process). "
        "Default: the cores beyond 2, at most 8.",
        rich_help_panel=DATA,
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        metavar="NAME|FILE",
        help="Architecture: an open_clip name (ViT-B-32) or a model-config JSON. "
        "Default: the checkpoint's metadata, or open_clip_config.json beside it.",
    ),
]
Templates = Annotated[
    str,
    typer.Option(
        metavar="openai|simple|FILE",
        help="Prompt templates of the zero-shot head: openai (80), simple, or a FILE "
        "of lines with {} for the class name.",
        rich_help_panel=EVAL,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda or cuda:N.", rich_help_panel=EVAL
    ),
]
BatchSize = Annotated[
    int, typer.Option(metavar="N", help="Images per forward pass.", rich_help_panel=EVAL)
]
BlockImages = Annotated[
    int | None,
    typer.Option(
        metavar="N",
        help="Images decoded and held at once; every point is evaluated on a block before "
        "the next is read. Default: as many whole batches as fit in about 128 MiB.",
        rich_help_panel=EVAL,
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        metavar="fp32|bf16|fp16",
        help="Working-model dtype: fp32, bf16 or fp16.",
        rich_help_panel=EVAL,
    ),
]
Alphas = Annotated[
    str,
    typer.Option(
        metavar="A,B,C|START:STOP:STEP",
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
    typer.Option(
        metavar="REGEX",
        help="Regex of tensor names kept at the fine-tuned value.",
        rich_help_panel=PATH,
    ),
]
FailureThreshold = Annotated[
    float,
    typer.Option(
        metavar="X", help="An OOD gain at or below this is a failure mode.", rich_help_panel=PATH
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


SHARPNESS = "Sharpness"
Checkpoints = Annotated[
    list[Path],
    typer.Argument(
        metavar="CHECKPOINT",
        help="One checkpoint (.safetensors): measure that model; or a zero-shot and a "
        "fine-tuned one: measure at every alpha of the path between them.",
        show_default=False,
    ),
]
Rho = Annotated[
    str,
    typer.Option(
        "--rho",
        metavar="R[,R...]",
        help="Radius relative to |w|: the noise std (average) or the bound on "
        "||delta/|w|||_p (worst). A list 0.05,0.1,1.0 sweeps.",
        rich_help_panel=SHARPNESS,
    ),
]
Iterations = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="Noise draws (average) or gradient-ascent steps (worst).",
        rich_help_panel=SHARPNESS,
    ),
]
Kind = Annotated[
    str,
    typer.Option(
        metavar="average|worst",
        help="average: mean loss rise under Gaussian noise; worst: largest rise in the rho-ball.",
        rich_help_panel=SHARPNESS,
    ),
]
Norm = Annotated[
    str,
    typer.Option(
        metavar="l2|linf",
        help="Worst case: the ball's norm, l2 or linf.",
        rich_help_panel=SHARPNESS,
    ),
]
IncludeHead = Annotated[
    bool,
    typer.Option(
        "--include-head",
        help="Also perturb logit_scale and a stored head.",
        rich_help_panel=SHARPNESS,
    ),
]
IncludeText = Annotated[
    bool,
    typer.Option(
        "--include-text",
        help="Also perturb the text tower (re-encodes the class prompts at every draw).",
        rich_help_panel=SHARPNESS,
    ),
]
Layers = Annotated[
    str | None,
    typer.Option(
        metavar="NAMES",
        help="Perturb only these layer groups: names or globs, comma-separated "
        "(visual.block.*). Default: every perturbable layer.",
        rich_help_panel=SHARPNESS,
    ),
]
PerturbExclude = Annotated[
    str | None,
    typer.Option(
        "--exclude",
        metavar="REGEX",
        help="Regex of tensor names never perturbed.",
        rich_help_panel=SHARPNESS,
    ),
]
MeasuredAlphas = Annotated[
    str,
    typer.Option(
        "--alphas",
        metavar="A,B,C|START:STOP:STEP",
        help="Points of the path (two checkpoints): a list 0,0.5,1 or a range "
        "start:stop:step (inclusive), measured exactly as given.",
        rich_help_panel=PATH,
    ),
]


def dataset_specs(id: str | None, ood: list[str] | None) -> list:
    from ..data import DatasetSpec

    specs = [DatasetSpec.parse(id, role="id")] if id else []
    return specs + [DatasetSpec.parse(text, role="ood") for text in ood or []]


HeadClassnames = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Class names of a stored head (head.weight), in order: a file, one per line or a "
        "JSON list. Datasets with fewer classes are mapped onto it by name.",
        rich_help_panel=EVAL,
    ),
]


def run_options(
    *,
    image_column: str | None,
    label_column: str | None,
    classnames: Path | None,
    limit: int | None,
    seed: int,
    num_workers: int | None,
    device: str,
    batch_size: int,
    precision: str,
    templates: str,
    head_classnames: Path | None = None,
    data_cache: Path | None = None,
    block_images: int | None = None,
    alphas: str = "0:1:0.1",
    extrapolate: bool = False,
    exclude: str | None = None,
    failure_threshold: float = 0.0,
) -> RunOptions:
    return RunOptions(
        data=DataOptions(
            image_column, label_column, classnames, limit, seed, num_workers, data_cache
        ),
        eval=EvalOptions(
            device, batch_size, precision, templates, head_classnames, block_images=block_images
        ),
        path=PathOptions(parse_alphas(alphas), exclude, extrapolate, failure_threshold),
    )


Format = Annotated[
    str,
    typer.Option(
        "--format",
        metavar="table|json|md",
        help="table: the summary on stderr; json: the report on stdout; md: the summary "
        "as a GitHub markdown table on stdout (for a CI job summary).",
    ),
]


def check_format(value: str) -> str:
    from ..errors import ConfigError

    if value not in ("table", "json", "md"):
        raise ConfigError(f"--format {value!r} is unknown; choose table, json or md")
    return value


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

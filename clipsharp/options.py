"""Every option of clipsharp, declared once: a field of a frozen dataclass with its default,
its help and how it is typed on the command line.

The library takes these dataclasses as they are. The CLI offers each field declared with
:func:`option` as a flag of every command that takes its dataclass (``cli/params.py``
generates the typer parameters), and ``clipsharp.toml`` can set it under the flag's name.
Adding an option is adding a field here (and using it where it matters). The arguments and
options of the command line alone are declared with :func:`option` too, at the end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
TEMPLATE_SETS = ("openai", "simple")
SUBSET_LOGITS = ("restricted", "all")  # --subset-logits: a subset's classes only, or every class
SHARPNESS_KINDS = ("average", "worst")
SHARPNESS_NORMS = ("l2", "linf")
GRANULARITIES = ("block", "module", "tensor")
BACKGROUNDS = {"ft": 1.0, "zs": 0.0}  # layerwise background -> the alpha every other layer sits at
STRAGGLER_RANKINGS = ("sharpness", "barrier")
PRUNE_TARGETS = ("weights", "task-vector")
DECODERS = ("cpu", "cuda")  # --decode: PIL in the workers, or torchvision's decoder on the GPU
# --help panels
DATA, EVAL, PATH, SHARPNESS, LAYERS, RULE, PRUNE, STATISTICS = (
    "Datasets", "Evaluation", "Path", "Sharpness", "Layers", "Straggler rule", "Pruning",
    "Statistics",
)  # a table, aligned to read by column  # fmt: skip


@dataclass(frozen=True)
class Flag:
    """How the command line and clipsharp.toml offer one option."""

    help: str
    metavar: str | None = None  # what to type: N, FILE, A,B,C|START:STOP:STEP; None for a switch
    panel: str | None = None  # the --help panel that lists it
    name: str | None = None  # the flag when it is not --FIELD-NAME ("--rho", "--x/--no-x")
    short: str | None = None  # a one-letter alias ("-o")
    argument: bool = False  # a positional argument of the command, not a flag
    text: str | None = None  # the default as typed, when ``parse`` makes the value from text
    parse: Callable[[str], Any] | None = None  # the typed text -> the field's value


def option(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    panel: str | None = None,
    name: str | None = None,
    short: str | None = None,
    argument: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field offered on the command line and in clipsharp.toml.

    ``default`` is the value (``...``: none, the user must give it), or, with ``parse``, the
    text a user would type for it (``option("0:1:0.1", ..., parse=parse_alphas)``): the
    field's default is then ``parse(default)`` and --help shows the text.
    """
    flag = Flag(help, metavar, panel, name, short, argument, default if parse else None, parse)
    if default is ...:
        return field(metadata={"flag": flag})
    return field(default=parse(default) if parse else default, metadata={"flag": flag})


def flag_of(f: Any) -> Flag | None:
    """The :class:`Flag` of a dataclass field, or None for a field the CLI does not offer."""
    return f.metadata.get("flag")


def check_choice(option_name: str, value: str, choices) -> None:
    """Refuse a value that is not one of ``choices``, naming the option and the choices."""
    if value not in choices:
        raise ConfigError(f"{option_name} {value!r} is unknown; choose one of {', '.join(choices)}")


def parse_rhos(text: str) -> tuple[float, ...]:
    """Parse ``1.0`` or ``0.05,0.1,0.5`` into sorted unique radii."""
    try:
        values = [float(part) for part in str(text).strip("[] ").split(",") if part.strip()]
    except ValueError as e:
        raise ConfigError(f"--rho {text!r} is not a number or a list like 0.05,0.1,1.0") from e
    if any(not math.isfinite(v) for v in values):
        raise ConfigError(f"--rho {text!r} holds a value that is not finite; give numbers >= 0")
    return tuple(sorted(set(values)))


def check_seed(seed: int) -> None:
    """Refuse a seed numpy's generators cannot take (they need an integer >= 0)."""
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")


def check_regex(option: str, pattern: str | None) -> None:
    """Refuse a pattern that is not a valid regular expression, naming the option."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{option} {pattern!r} is not a valid regex ({e})") from e


MAX_ALPHAS = 10_000  # points of a path, listed or a range


def parse_alphas(text: str) -> tuple[float, ...]:
    """Parse ``0,0.25,1`` or ``start:stop:step`` (stop inclusive) into sorted unique alphas.

    Example:
        >>> parse_alphas("0:1:0.25")
        (0.0, 0.25, 0.5, 0.75, 1.0)
    """
    text = text.strip()
    try:
        parts = [float(part) for part in text.split(":" if ":" in text else ",") if part.strip()]
    except ValueError as e:
        raise ConfigError(
            f"--alphas {text!r} is not a list like 0,0.5,1 or a range like 0:1:0.1"
        ) from e
    if any(not math.isfinite(v) for v in parts):
        raise ConfigError(f"--alphas {text!r} holds a value that is not finite; give numbers")
    if ":" in text:
        if len(parts) != 3:
            raise ConfigError(f"--alphas {text!r}: a range is start:stop:step, e.g. 0:1:0.1")
        return tuple(sorted(set(_inclusive_range(*parts))))
    alphas = tuple(sorted(set(parts)))
    if len(alphas) > MAX_ALPHAS:
        raise ConfigError(
            f"--alphas lists {len(alphas)} points, more than {MAX_ALPHAS}; give fewer"
        )
    return alphas


def _inclusive_range(start: float, stop: float, step: float) -> list[float]:
    if step <= 0 or stop < start:
        raise ConfigError(
            f"--alphas range {start:g}:{stop:g}:{step:g} needs start <= stop and a positive step"
        )
    span = (stop - start) / step  # may overflow to inf
    if span + 1e-9 >= MAX_ALPHAS:  # floor(span) + 1 points would be more than MAX_ALPHAS
        raise ConfigError(
            f"--alphas range gives {span + 1:.0f} points, more than {MAX_ALPHAS}; use a larger step"
        )
    count = int(math.floor(span + 1e-9)) + 1
    # Rounding keeps 0.1 * 3 from printing as 0.30000000000000004 in reports.
    return [round(start + i * step, 10) for i in range(count)]


@dataclass(frozen=True)
class InputOptions:
    """What a run reads besides its checkpoints: the datasets, and how to read the models."""

    id: str | None = option(
        None, "In-distribution dataset SOURCE[:SPLIT].", metavar="SPEC", panel=DATA
    )
    ood: tuple[str, ...] = option(
        (),
        "Out-of-distribution dataset SOURCE[:SPLIT]; repeat for several.",
        metavar="SPEC",
        panel=DATA,
    )
    model: str | None = option(
        None,
        "Architecture: an open_clip name (ViT-B-32) or a model-config JSON. "
        "Default: the checkpoint's metadata, open_clip_config.json beside it, or the "
        "tensors' shapes (a standard ViT CLIP, heads of 64, GELU).",
        metavar="NAME|FILE",
    )
    allow_nonfinite: bool = option(False, "Accept checkpoints holding NaN or Inf values.")


@dataclass(frozen=True)
class DataOptions:
    """How dataset specs become labelled images."""

    image_column: str | None = option(
        None, "Image column (default: the one Image feature).", metavar="NAME", panel=DATA
    )
    label_column: str | None = option(
        None, "Label column (default: the one ClassLabel feature).", metavar="NAME", panel=DATA
    )
    classnames: str | None = option(
        None,
        "Class names: a FILE (one per line, or a JSON list), or imagenet, imagenet-a, "
        "imagenet-r (CLIP's names of ImageNet's classes; folders may be wnids or indices).",
        metavar="FILE|imagenet|imagenet-a|imagenet-r",
        panel=DATA,
    )
    limit: int | None = option(
        None,
        "Evaluate a seeded subset of at most N examples per dataset.",
        metavar="N",
        panel=DATA,
    )
    seed: int = option(0, "Seed of every random choice (--limit subsets).", metavar="N")
    num_workers: int | None = option(
        None,
        "Processes decoding images while the model computes (0: in this process). "
        "Default: on a GPU every core but one, at most 16; on the CPU the cores beyond 2, "
        "at most 8.",
        metavar="N",
        panel=DATA,
    )
    cache_dir: Path | None = option(
        None,
        "Keep the decoded images in this folder, keyed by the dataset's fingerprint "
        "(content, split, columns, subset, transform): later runs skip decoding. "
        "uint8 crops: about N x 3 x H x W bytes per dataset.",
        metavar="DIR",
        panel=DATA,
        name="--data-cache",
    )
    skip_bad_images: bool = option(
        False,
        "Leave out images that cannot be decoded (counted in the report) instead of "
        "stopping; every image is then decoded once when the dataset is opened.",
        panel=DATA,
    )
    decode: str = option(
        "cpu",
        "Where JPEGs are decoded and resized: cpu (PIL, in the workers) or cuda "
        "(torchvision's nvJPEG decoder on the GPU; PNG and WebP stay on the CPU). The "
        "pixels differ slightly, so the decoder enters the data fingerprint.",
        metavar="cpu|cuda",
        panel=DATA,
    )

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be a positive number of examples, got {self.limit}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers must be 0 or more, got {self.num_workers}")
        check_choice("--decode", self.decode, DECODERS)


def auto_workers(cpus: int | None = None, *, gpu: bool = False) -> int:
    """Decoding processes when --num-workers is not given.

    On a GPU the forwards need no cores: every core but the one driving the GPU, at most 16.
    On the CPU the cores the model's threads leave over, at most 8 (none on a machine of 2
    cores or fewer: there, decoding in the main process costs less than workers fighting
    the forward pass for the cores).
    """
    import os

    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return min(16, max(0, cpus - 1)) if gpu else min(8, max(0, cpus - 2))


def auto_prefetch(cpus: int | None = None, *, gpu: bool = False) -> int:
    """Blocks decoded ahead when --prefetch-blocks is not given: one (two blocks in memory)
    on a GPU, or on a CPU with cores for decoding workers (more than 2); none otherwise,
    where decoding would only take turns with the forwards for the same cores (measured:
    1.04-1.13 times the time per block on 2 busy cores, benchmarks/README.md)."""
    import os

    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return 1 if gpu or cpus > 2 else 0


@dataclass(frozen=True)
class EvalOptions:
    """How the evaluation loop runs."""

    device: str = option(
        "auto", "auto, cpu, cuda or cuda:N.", metavar="auto|cpu|cuda[:N]", panel=EVAL
    )
    batch_size: int = option(128, "Images per forward pass.", metavar="N", panel=EVAL)
    precision: str = option(
        "fp32", "Working-model dtype: fp32, bf16 or fp16.", metavar="fp32|bf16|fp16", panel=EVAL
    )
    templates: str | None = option(
        None,
        "Prompt templates of the zero-shot head: openai (80), simple, or a FILE "
        "of lines with {} for the class name. Default: openai, and a clip_benchmark "
        "webdataset's own zeroshot_classification_templates.txt for that dataset.",
        metavar="openai|simple|FILE",
        panel=EVAL,
    )
    head_classnames: str | None = option(
        None,
        "Class names of a stored head (head.weight), in order: a file, one per line or a "
        "JSON list, or imagenet. Datasets with fewer classes are mapped onto it by name.",
        metavar="FILE|imagenet",
        panel=EVAL,
    )
    subset_logits: str = option(
        "restricted",
        "A dataset whose classes are some of the head's: restricted (logits of its classes "
        "only, WiSE-FT's convention) or all (argmax over every class of the head).",
        metavar="restricted|all",
        panel=EVAL,
    )
    block_images: int | None = option(
        None,
        "Images of a block; every point is evaluated on a block before the next, "
        "decoded meanwhile, is used. Default: as many whole batches as fit in about "
        "128 MiB shared by the blocks held.",
        metavar="N",
        panel=EVAL,
    )
    prefetch_blocks: int | None = option(
        None,
        "Blocks decoded ahead while the current one is evaluated (0: decode, then evaluate). "
        "Default: 1 (two blocks in memory) on a GPU or more than 2 cores, else 0.",
        metavar="N",
        panel=EVAL,
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.block_images is not None and self.block_images < 1:
            raise ConfigError(f"--block-images must be at least 1, got {self.block_images}")
        if self.prefetch_blocks is not None and self.prefetch_blocks < 0:
            raise ConfigError(f"--prefetch-blocks must be 0 or more, got {self.prefetch_blocks}")
        check_choice("--precision", self.precision, PRECISIONS)
        check_choice("--subset-logits", self.subset_logits, SUBSET_LOGITS)


@dataclass(frozen=True)
class PathOptions:
    """The interpolation path theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned."""

    alphas: tuple[float, ...] = option(
        "0:1:0.1",
        "Points of the path: a list 0,0.25,1 or a range start:stop:step (inclusive). "
        "0 and 1 are always added.",
        metavar="A,B,C|START:STOP:STEP",
        panel=PATH,
        parse=parse_alphas,
    )
    exclude: str | None = option(
        None, "Regex of tensor names kept at the fine-tuned value.", metavar="REGEX", panel=PATH
    )
    extrapolate: bool = option(False, "Allow alphas outside [0, 1].", panel=PATH)
    failure_threshold: float = option(
        0.0, "An OOD gain at or below this is a failure mode.", metavar="X", panel=PATH
    )

    def __post_init__(self) -> None:
        check_regex("--exclude", self.exclude)
        if not self.alphas:
            raise ConfigError("--alphas is empty; give at least one value, e.g. 0,0.5,1")
        if not self.extrapolate:
            outside = [a for a in self.alphas if not 0.0 <= a <= 1.0]
            if outside:
                raise ConfigError(
                    f"--alphas {outside[0]:g} is outside [0, 1]; add --extrapolate to allow it"
                )


@dataclass(frozen=True)
class RunOptions:
    """Everything one analysis run needs besides its inputs."""

    data: DataOptions = field(default_factory=DataOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    path: PathOptions = field(default_factory=PathOptions)


@dataclass(frozen=True)
class SharpnessOptions:
    """Adaptive sharpness (Andriushchenko et al., ICML 2023): what is perturbed, and how."""

    kind: str = option(
        "average",
        "average: mean loss rise under Gaussian noise; worst: largest rise in the rho-ball.",
        metavar="average|worst",
        panel=SHARPNESS,
    )
    rhos: tuple[float, ...] = option(
        "1.0",
        "Radius relative to |w|: the noise std (average) or the bound on "
        "||delta/|w|||_p (worst). A list 0.05,0.1,1.0 sweeps.",
        metavar="R[,R...]",
        panel=SHARPNESS,
        name="--rho",
        parse=parse_rhos,
    )
    iterations: int = option(
        20,
        "Noise draws (average) or gradient-ascent steps (worst).",
        metavar="N",
        panel=SHARPNESS,
    )
    norm: str = option(
        "l2", "Worst case: the ball's norm, l2 or linf.", metavar="l2|linf", panel=SHARPNESS
    )
    include_head: bool = option(
        False, "Also perturb logit_scale and a stored head.", panel=SHARPNESS
    )
    include_text: bool = option(
        False,
        "Also perturb the text tower (re-encodes the class prompts at every draw).",
        panel=SHARPNESS,
    )
    exclude: str | None = option(
        None, "Regex of tensor names never perturbed.", metavar="REGEX", panel=SHARPNESS
    )
    layers: str | None = option(
        None,
        "Perturb only these layer groups: names or globs, comma-separated "
        "(visual.block.*). Default: every perturbable layer.",
        metavar="NAMES",
        panel=SHARPNESS,
    )

    def __post_init__(self) -> None:
        check_choice("--kind", self.kind, SHARPNESS_KINDS)
        check_choice("--norm", self.norm, SHARPNESS_NORMS)
        if not self.rhos or any(not (math.isfinite(r) and r >= 0) for r in self.rhos):
            raise ConfigError(f"--rho needs finite values >= 0, e.g. 0.1,1.0; got {self.rhos}")
        if self.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {self.iterations}")
        if self.kind == "worst" and self.include_text:
            raise ConfigError(
                "--kind worst with --include-text is not supported (the zero-shot head is "
                "built without gradients); drop --include-text or use --kind average"
            )


@dataclass(frozen=True)
class LayerwiseOptions:
    """Which layers move one at a time, against which background."""

    granularity: str = option(
        "block",
        "Layer groups: block (transformer blocks, embeddings, heads), module "
        "(a weight with its bias) or tensor.",
        metavar="block|module|tensor",
        panel=LAYERS,
    )
    background: str = option(
        "ft",
        "ft: every other layer fine-tuned, one layer moves toward zero-shot; "
        "zs: every other layer zero-shot, one moves toward fine-tuned.",
        metavar="ft|zs",
        panel=LAYERS,
    )
    layers: str | None = option(
        None,
        "Only these layers: a comma list of names or globs ('visual.block.*'); "
        "clipsharp inspect lists the names.",
        metavar="NAMES",
        panel=LAYERS,
    )
    collapse_threshold: float = option(
        0.05,
        "A layer collapses when the accuracy on its path falls this far below both endpoints.",
        metavar="X",
        panel=LAYERS,
    )
    prefix_cache: bool = option(
        True,
        "Reuse the activations below the moving layer (ViT image towers; exact).",
        panel=LAYERS,
        name="--prefix-cache/--no-prefix-cache",
    )

    def __post_init__(self) -> None:
        check_choice("--granularity", self.granularity, GRANULARITIES)
        check_choice("--background", self.background, BACKGROUNDS)


@dataclass(frozen=True)
class StragglerOptions:
    """The rule that picks straggler layers."""

    layerwise: Path | None = option(
        None,
        "A layerwise report of the same pair: --by barrier ranks by its depths; "
        "with --by sharpness, the Spearman correlation of sharpness and depth is reported.",
        metavar="REPORT",
        panel=RULE,
    )  # read by the run, never part of the report's config
    by: str = option(
        "sharpness",
        "Rank layers by layer-wise sharpness, or by their depth in a layerwise "
        "report (barrier; needs --layerwise).",
        metavar="sharpness|barrier",
        panel=RULE,
    )
    z: float = option(
        3.5, "Robust z-score above which a layer is a straggler.", metavar="Z", panel=RULE
    )
    top_k: int | None = option(
        None, "Instead of --z: the K highest layers of each tower.", metavar="K", panel=RULE
    )
    rank_on: str | None = option(
        None,
        "Dataset whose values rank the layers (default: the ID set, else the first).",
        metavar="NAME",
        panel=RULE,
    )

    def __post_init__(self) -> None:
        check_choice("--by", self.by, STRAGGLER_RANKINGS)
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {self.top_k}")

    def rule(self) -> str:
        value = "layer-wise sharpness" if self.by == "sharpness" else "layer depth (layerwise)"
        if self.top_k:
            return f"the {self.top_k} highest {value} in each tower"
        return f"robust z-score of {value} > {self.z:g} within each tower"


@dataclass(frozen=True)
class PruneOptions:
    """Which layers are pruned, and how."""

    layers: str | None = option(
        None, "Layers to prune: names or globs, comma-separated.", metavar="NAMES", panel=PRUNE
    )
    from_report: Path | None = option(
        None,
        "Prune the stragglers of this stragglers report.",
        metavar="REPORT",
        panel=PRUNE,
        name="--from",
    )  # exactly one of layers and from_report
    sparsity: float = option(
        0.5, "Fraction of entries pruned per tensor.", metavar="X", panel=PRUNE
    )
    target: str = option(
        "weights",
        "weights: zero the smallest |w|; task-vector: return the smallest "
        "|ft - zs| to zero-shot (needs --zero-shot).",
        metavar="weights|task-vector",
        panel=PRUNE,
    )
    include_vectors: bool = option(False, "Also prune biases and norms.", panel=PRUNE)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity <= 1.0:
            raise ConfigError(f"--sparsity {self.sparsity:g} is outside [0, 1]")
        check_choice("--target", self.target, PRUNE_TARGETS)


@dataclass(frozen=True)
class StatisticsOptions:
    """How sure a correlation over models is."""

    bootstrap: int = option(
        2000, "Bootstrap resamples of the models.", metavar="N", panel=STATISTICS
    )
    confidence: float = option(
        0.95, "Coverage of the bootstrap interval.", metavar="X", panel=STATISTICS
    )
    permutations: int = option(
        10000,
        "Random pairings for the p-value above 8 models (8 or fewer: exact).",
        metavar="N",
        panel=STATISTICS,
    )

    def __post_init__(self) -> None:
        if self.bootstrap < 1:
            raise ConfigError(f"--bootstrap must be at least 1, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            raise ConfigError(
                f"--confidence must lie strictly between 0 and 1 (0.95), got {self.confidence}"
            )
        if self.permutations < 1:
            raise ConfigError(f"--permutations must be at least 1, got {self.permutations}")


@dataclass(frozen=True)
class SweepOptions:
    """What ``study`` runs on each fine-tuned model, and how it correlates the results."""

    run: RunOptions = field(default_factory=RunOptions)  # data, evaluation; interpolate's path
    sharpness: SharpnessOptions = field(default_factory=SharpnessOptions)  # stragglers: 1st rho
    sharpness_alphas: tuple[float, ...] = option(
        "0,0.5,1",
        "Sharpness along the path at these alphas (1 is always added).",
        metavar="A,B,C|START:STOP:STEP",
        panel=PATH,
        parse=parse_alphas,
    )
    stragglers: StragglerOptions = field(default_factory=StragglerOptions)
    layerwise: LayerwiseOptions | None = None  # None: no layerwise analysis (--layerwise: block)
    statistics: StatisticsOptions = field(default_factory=StatisticsOptions)


@dataclass(frozen=True)
class DemoOptions:
    """What ``demo`` builds, where, and how it evaluates (its tour's sizes: demo/run.py)."""

    out: Path = option(
        Path("clipsharp-demo"), "Folder for the data, models, reports and figures.", metavar="DIR"
    )
    force: bool = option(False, "Rebuild the models even if cached.")
    quick: bool = option(
        False, "A toy recipe that builds in seconds: the commands and files, not the science."
    )
    seed: int = option(0, "Seed of the demo's training and of its analyses.", metavar="N")
    evaluation: EvalOptions = field(default_factory=EvalOptions)  # device, batch size, prefetch


@dataclass(frozen=True)
class ConvertOptions:
    """What ``convert`` adds to each checkpoint, and whether it replaces an output."""

    head: Path | None = option(
        None,
        "A classification head saved apart (a ClassificationHead module, or its "
        "weight and bias) to attach to each checkpoint.",
        metavar="FILE",
    )
    force: bool = option(False, "Replace the outputs that exist.")


# ---- the options of merge and study, which only those commands take

MERGE, STUDY = "Merge", "Study"  # --help panels


@dataclass(frozen=True)
class MergeOptions:
    """The alpha ``merge`` writes theta(alpha) at, given or chosen from a report."""

    alpha: str = option(
        ...,
        "A in [0, 1]: theta = (1 - A) * zero-shot + A * fine-tuned; or 'best': the "
        "best alpha on the in-distribution set of the --from report.",
        metavar="A|best",
        panel=MERGE,
    )  # a number as text ("0.5") or "best"; checked by merge
    from_report: Path | None = option(
        None,
        "An interpolate report of this pair, for --alpha best.",
        metavar="REPORT",
        panel=MERGE,
        name="--from",
    )
    extrapolate: bool = option(
        False,
        "Allow A outside [0, 1]: beyond the fine-tuned model (A > 1) or before the "
        "zero-shot one (A < 0).",
        panel=MERGE,
    )
    select_on: str | None = option(
        None,
        "Choose alpha on this dataset of the report instead of its --id set. An OOD "
        "set means choosing on the test set; the output says so.",
        metavar="NAME",
        panel=MERGE,
    )


@dataclass(frozen=True)
class StudyOptions:
    """What ``study`` reads (checkpoints, or reports already written) and where it keeps
    each model's reports."""

    paths: tuple[Path, ...] = option(
        ...,
        "A zero-shot checkpoint and its fine-tuned checkpoints: run every analysis "
        "of each; or reports (.json) already written: interpolate reports (one per "
        "fine-tuned checkpoint) with any sharpness, layerwise and stragglers reports.",
        metavar="ZERO_SHOT FINE_TUNED... | REPORT...",
        argument=True,
    )
    layerwise: bool = option(
        False, "Also run layerwise (block granularity) on each model.", panel=STUDY
    )  # the LayerwiseOptions() of SweepOptions.layerwise, unless that is set
    reports_dir: Path | None = option(
        None,
        "Folder of each model's reports (NAME.COMMAND.json). "
        "Default: STUDY.reports beside -o STUDY.json.",
        metavar="DIR",
        panel=STUDY,
    )


# ----------------------------------------------------------------------------- the CLI's own
# The arguments and outputs several commands share, as the annotations of their parameters
# (``output: opt.Output``), and how a command shows its result.

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
    if value is not None and value not in allowed:
        raise ConfigError(
            f"--fail-on {value!r} is not a condition here; choose {' or '.join(allowed)}"
        )


@dataclass(frozen=True)
class Rendering:
    """How a command shows its result (the CLI's own options)."""

    formats: ClassVar[tuple[str, ...]] = ("table", "json", "md")  # --format's choices
    format: str = option(
        "table",
        "table: the summary on stderr; json: the report on stdout; md: the summary "
        "as a GitHub markdown table on stdout (for a CI job summary).",
        metavar="table|json|md",
    )
    show_config: bool = option(
        False, "Print the resolved options (flags, clipsharp.toml, defaults) and exit."
    )

    def __post_init__(self) -> None:
        if self.format not in self.formats:
            *most, last = self.formats
            raise ConfigError(
                f"--format {self.format!r} is unknown; choose {', '.join(most)} or {last}"
            )

"""Options of every analysis, as frozen dataclasses with their defaults.

The CLI builds these from flags and ``clipsharp.toml``; the library takes them
as they are. One commented line per field that is not obvious.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
# progress(task, done, total), drawn by the CLI. ``task`` is a label ("interpolate"),
# optionally followed by the point being evaluated in brackets ("interpolate [0.5]", see
# ``point_task``); a step without a count reports (task, 0, 0) as it starts and (task, 1, 1)
# when it ends (see ``step``). Counts of the analyses are image-evaluations (images x points).
Progress = Callable[[str, int, int], None]
TEMPLATE_SETS = ("openai", "simple")


@dataclass(frozen=True)
class DataOptions:
    """How dataset specs become labelled image tensors."""

    image_column: str | None = None  # None: the one Image feature of the dataset
    label_column: str | None = None  # None: the one ClassLabel feature of the dataset
    classnames: Path | None = None  # file of class names (one per line, or a JSON list)
    limit: int | None = None  # deterministic subset of at most this many examples
    seed: int = 0  # seeds the subset chosen by `limit`
    num_workers: int | None = None  # processes decoding images; None: auto_workers()
    cache_dir: Path | None = None  # keep preprocessed images here, keyed by dataset fingerprint

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be a positive number of examples, got {self.limit}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"--num-workers must be 0 or more, got {self.num_workers}")


def auto_workers(cpus: int | None = None) -> int:
    """Decoding processes when --num-workers is not given: the cores the model's threads
    leave over, at most 8 (none on a machine of 2 cores or fewer: there, decoding in the
    main process costs less than workers fighting the forward pass for the cores)."""
    import os

    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return min(8, max(0, cpus - 2))


@dataclass(frozen=True)
class EvalOptions:
    """How the evaluation loop runs."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 128
    precision: str = "fp32"  # dtype of the working model: fp32 | bf16 | fp16
    templates: str = "openai"  # prompt templates of the zero-shot head: openai | simple | FILE
    head_classnames: Path | None = None  # class names of a stored head, in order (a file)
    block_images: int | None = None  # images held at once by the engine; None: ~128 MiB of them

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.block_images is not None and self.block_images < 1:
            raise ConfigError(f"--block-images must be at least 1, got {self.block_images}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}"
            )


@dataclass(frozen=True)
class PathOptions:
    """The interpolation path theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned."""

    alphas: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(11))
    exclude: str | None = None  # regex: matching tensors stay at the fine-tuned value
    extrapolate: bool = False  # allow alphas outside [0, 1]
    failure_threshold: float = 0.0  # OOD gain at or below this is a failure mode

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


def check_regex(option: str, pattern: str | None) -> None:
    """Refuse a pattern that is not a valid regular expression, naming the option."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{option} {pattern!r} is not a valid regex ({e})") from e


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
    return tuple(sorted(set(parts)))


def _inclusive_range(start: float, stop: float, step: float) -> list[float]:
    if step <= 0 or stop < start:
        raise ConfigError(
            f"--alphas range {start:g}:{stop:g}:{step:g} needs start <= stop and a positive step"
        )
    span = (stop - start) / step  # may overflow to inf
    if span >= 10_000:
        raise ConfigError(f"--alphas range gives {span:.0f} points or more; use a larger step")
    count = int(math.floor(span + 1e-9)) + 1
    # Rounding keeps 0.1 * 3 from printing as 0.30000000000000004 in reports.
    return [round(start + i * step, 10) for i in range(count)]


@dataclass(frozen=True)
class RunOptions:
    """Everything one `interpolate` run needs besides its inputs."""

    data: DataOptions = field(default_factory=DataOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    path: PathOptions = field(default_factory=PathOptions)


SHARPNESS_KINDS = ("average", "worst")
SHARPNESS_NORMS = ("l2", "linf")


@dataclass(frozen=True)
class SharpnessOptions:
    """Adaptive sharpness (Andriushchenko et al., ICML 2023): what is perturbed, and how."""

    kind: str = "average"  # average: E over Gaussian noise | worst: max by gradient ascent
    rhos: tuple[float, ...] = (1.0,)  # radii; average: noise std relative to |w|; a sweep if many
    iterations: int = 20  # noise draws (average) or gradient-ascent steps (worst)
    norm: str = "l2"  # worst case: the p of ||delta / |w|||_p <= rho: l2 | linf
    include_head: bool = False  # also perturb logit_scale and a stored head
    include_text: bool = False  # also perturb the text tower (class prompts re-encoded per draw)
    exclude: str | None = None  # regex: matching tensors are never perturbed
    layers: str | None = None  # comma list of layer groups or globs to perturb; None = all

    def __post_init__(self) -> None:
        if self.kind not in SHARPNESS_KINDS:
            raise ConfigError(
                f"--kind {self.kind!r} is unknown; choose one of {', '.join(SHARPNESS_KINDS)}"
            )
        if self.norm not in SHARPNESS_NORMS:
            raise ConfigError(
                f"--norm {self.norm!r} is unknown; choose one of {', '.join(SHARPNESS_NORMS)}"
            )
        if not self.rhos or any(not (math.isfinite(r) and r >= 0) for r in self.rhos):
            raise ConfigError(f"--rho needs finite values >= 0, e.g. 0.1,1.0; got {self.rhos}")
        if self.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {self.iterations}")
        if self.kind == "worst" and self.include_text:
            raise ConfigError(
                "--kind worst with --include-text is not supported (the zero-shot head is "
                "built without gradients); drop --include-text or use --kind average"
            )


def parse_rhos(text: str) -> tuple[float, ...]:
    """Parse ``1.0`` or ``0.05,0.1,0.5`` into sorted unique radii."""
    try:
        values = [float(part) for part in str(text).strip("[] ").split(",") if part.strip()]
    except ValueError as e:
        raise ConfigError(f"--rho {text!r} is not a number or a list like 0.05,0.1,1.0") from e
    if any(not math.isfinite(v) for v in values):
        raise ConfigError(f"--rho {text!r} holds a value that is not finite; give numbers >= 0")
    return tuple(sorted(set(values)))


def point_task(label: str, point: str) -> str:
    """The task of ``label`` while it evaluates ``point``: ``"interpolate [0.5]"``."""
    return f"{label} [{point}]" if point else label


def split_task(task: str) -> tuple[str, str]:
    """``(label, point)`` of a task made by :func:`point_task` (point ``""`` when none)."""
    match = re.fullmatch(r"(.*?) \[(.*)\]", task)
    return (match[1], match[2]) if match else (task, "")


@contextmanager
def step(progress: Progress | None, task: str) -> Iterator[None]:
    """Report a step without a count: ``(task, 0, 0)`` as it starts, ``(task, 1, 1)`` at its end."""
    if progress is None:
        yield
        return
    progress(task, 0, 0)
    yield
    progress(task, 1, 1)

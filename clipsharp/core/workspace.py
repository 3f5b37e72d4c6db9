"""Setting up an analysis: checkpoints -> architecture -> working model -> datasets.

Every input is validated here, cheapest first, before any evaluation starts:
the checkpoints (readable, finite, matching), the architecture, then the
datasets (opened and checked; their images are streamed later by the engine).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..data.load import EvalData, decode_device, load_all, read_classnames
from ..data.specs import DatasetSpec, dataset_specs
from ..errors import CheckpointError, ConfigError, DatasetError
from ..options import DataOptions, EvalOptions, InputOptions
from ..progress import Progress, step
from . import distributed
from .checkpoint import Checkpoint, load_checkpoint, validate_pair
from .engine import Engine
from .models import (
    DTYPES,
    NO_TEXT_TOWER,
    Architecture,
    ClipClassifier,
    ZeroShotHeads,
    build_classifier,
    build_tokenizer,
    eval_transform,
    load_templates,
    resolve_architecture,
    same_architecture,
)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> a GPU if there is one (under torchrun: the local rank's), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per local rank
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(
            f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


@dataclass
class Workspace:
    """Everything an analysis works on: one working model and the datasets.

    At rest the working model holds the last of ``checkpoints`` (the fine-tuned one of a
    pair); an analysis changes it only inside :meth:`restoring`.
    """

    checkpoints: dict[str, Checkpoint]  # "zero_shot" / "fine_tuned" (or "model") -> checkpoint
    arch: Architecture
    classifier: ClipClassifier
    heads: ZeroShotHeads
    datasets: list[EvalData]
    device: torch.device
    block_images: int | None = None  # images per engine block; None: chosen by memory
    prefetch_blocks: int | None = None  # blocks decoded ahead; None: auto_prefetch
    memo: dict = field(default_factory=dict, repr=False)  # see Engine.memo

    @property
    def at_rest(self) -> Checkpoint:
        """The checkpoint the working model holds between analyses."""
        return list(self.checkpoints.values())[-1]

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """On exit, also on error or Ctrl-C, the working model holds ``at_rest`` exactly.

        Zero-shot heads are cleared on entry and exit: inside, they are cached by the text
        identity of the points (see ``engine.Point``).
        """
        self.heads.invalidate()
        try:
            yield
        finally:
            self.classifier.load(self.at_rest.tensors)
            self.heads.invalidate()

    def require_text_tower(self, flag: str) -> None:
        """Refuse ``flag`` (an option that needs the text tower) on image-tower-only weights."""
        if not self.classifier.has_text_tower:
            raise CheckpointError(
                f"{flag} needs a text tower, which {self.at_rest.path} lacks (image-tower-only: "
                f"no transformer.* keys); drop {flag}"
            )

    def engine(self, batch_size: int, *, journal=None, progress=None) -> Engine:
        """An engine over this workspace's model and datasets (see ``engine.py``)."""
        return Engine(
            self.classifier,
            self.heads,
            self.datasets,
            batch_size,
            block_images=self.block_images,
            prefetch_blocks=self.prefetch_blocks,
            journal=journal,
            progress=progress,
            memo=self.memo,
        )

    def inputs(self) -> dict[str, Any]:
        """The report's ``inputs`` section."""
        return describe_checkpoints(self.checkpoints, self.arch) | {
            "datasets": [d.describe() for d in self.datasets]
        }


def describe_checkpoints(checkpoints: dict[str, Checkpoint], arch: Architecture) -> dict[str, Any]:
    """The report's ``inputs.checkpoints`` and ``inputs.architecture``."""
    return {
        "checkpoints": {
            role: {"path": str(c.path), "sha256": c.sha256, "model": arch.name}
            for role, c in checkpoints.items()
        },
        "architecture": arch.describe(),
    }


@dataclass(frozen=True)
class Inputs:
    """What a run reads, named but not yet opened: ``run`` opens it with the analysis's
    data and evaluation options (see ``open_workspace``)."""

    checkpoints: dict[str, Path]  # role -> file: zero_shot and fine_tuned, or model
    specs: tuple[DatasetSpec, ...]  # the --id / --ood datasets
    model: str | None = None  # --model: an open_clip name or a config JSON
    allow_nonfinite: bool = False

    @classmethod
    def of(cls, checkpoints: Mapping[str, str | Path], options: InputOptions) -> Inputs:
        """The inputs of a run on ``checkpoints`` (role -> file) with the datasets and the
        model of ``options`` (``--id``, ``--ood``, ``--model``, ``--allow-nonfinite``).

        Example:
            >>> Inputs.of({"zero_shot": "zs.safetensors", "fine_tuned": "ft.safetensors"},
            ...           InputOptions(ood=("data/shifted",)))
        """
        return cls(
            {role: Path(path) for role, path in checkpoints.items()},
            dataset_specs(options),
            model=options.model,
            allow_nonfinite=options.allow_nonfinite,
        )

    def open(self, data: DataOptions, evaluation: EvalOptions, progress=None) -> Workspace:
        return open_workspace(
            self.checkpoints,
            self.specs,
            data=data,
            evaluation=evaluation,
            model=self.model,
            allow_nonfinite=self.allow_nonfinite,
            progress=progress,
        )


def open_workspace(
    checkpoints: dict[str, Path],
    specs: Sequence[DatasetSpec],
    *,
    data: DataOptions,
    evaluation: EvalOptions,
    model: str | None = None,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> Workspace:
    """Load and validate the checkpoints and datasets; the working model holds the last one.

    ``checkpoints`` maps roles to files: ``{"zero_shot": zs, "fine_tuned": ft}`` for a
    pair (validated as a pair), ``{"model": path}`` for one model. ``progress`` hears of
    each step (reading checkpoints, opening datasets) as it starts and ends.
    """
    if not specs:
        raise ConfigError("no datasets: give --id and/or --ood (or set them in clipsharp.toml)")
    device = resolve_device(evaluation.device)
    decode_device(data.decode, device)  # --decode cuda without a GPU: refused before any work
    distributed.init_from_env(device)
    with step(progress, "reading checkpoints"):
        loaded, arch, classifier = open_checkpoints(
            checkpoints,
            model=model,
            allow_nonfinite=allow_nonfinite,
            device=device,
            dtype=DTYPES[evaluation.precision],
        )
    if classifier.head is None and not classifier.has_text_tower:
        raise CheckpointError(NO_TEXT_TOWER.format(what=list(loaded.values())[-1].path))
    templates = load_templates(evaluation.templates or "openai")
    head_names = _head_classnames(evaluation, loaded)
    heads = ZeroShotHeads(
        classifier, build_tokenizer(arch), templates, head_names, evaluation.subset_logits
    )
    transform = eval_transform(arch, classifier.model)
    with step(progress, "opening datasets"):
        datasets = load_all(list(specs), transform, data, device=device)
    if evaluation.templates is not None or classifier.head is not None:
        # --templates given is every dataset's; a stored head uses no templates
        datasets = [replace(d, templates=None) for d in datasets]
    _check_heads(heads, datasets)
    return Workspace(
        loaded,
        arch,
        classifier,
        heads,
        datasets,
        device,
        block_images=evaluation.block_images,
        prefetch_blocks=evaluation.prefetch_blocks,
    )


def open_checkpoints(
    checkpoints: dict[str, Path],
    *,
    model: str | None = None,
    allow_nonfinite: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, Checkpoint], Architecture, ClipClassifier]:
    """Read, validate (as a pair when two) and build the working model holding the last one
    (an image-tower-only pair: without the text members the checkpoints lack)."""
    loaded = {
        role: load_checkpoint(path, allow_nonfinite=allow_nonfinite)
        for role, path in checkpoints.items()
    }
    if len(loaded) == 2:
        validate_pair(*loaded.values())
    arch = common_architecture(list(loaded.values()), model)
    classifier = build_classifier(arch, list(loaded.values()), device=device, dtype=dtype)
    return loaded, arch, classifier


def common_architecture(checkpoints: list[Checkpoint], model: str | None) -> Architecture:
    """Resolve from each checkpoint; they must agree (or ``--model`` decides for both)."""
    if model:
        return resolve_architecture(checkpoints[0], model)
    found: list[Architecture] = []
    errors: list[CheckpointError] = []
    for ckpt in checkpoints:
        try:
            found.append(resolve_architecture(ckpt))
        except CheckpointError as e:
            errors.append(e)
    if not found:
        raise errors[0]
    if any(not same_architecture(a, found[0]) for a in found[1:]):
        names = " and ".join(c.name for c in checkpoints)
        raise CheckpointError(f"{names} record different architectures; pass --model to choose one")
    return found[0]


def _check_heads(heads: ZeroShotHeads, datasets: Sequence[EvalData]) -> None:
    """Every dataset's classes fit the stored head (or map onto it by name), before any work."""
    if heads.classifier.head is None:
        return
    for d in datasets:
        try:
            heads.plan(d.classnames, d.classes.imagenet)
        except DatasetError as e:
            raise DatasetError(f"dataset {d.spec.text}: {e}") from e


def _head_classnames(evaluation: EvalOptions, checkpoints: dict[str, Checkpoint]):
    """The stored head's class names: ``--head-classnames``, else the checkpoint metadata."""
    if evaluation.head_classnames is not None:
        return read_classnames(evaluation.head_classnames)
    for checkpoint in reversed(list(checkpoints.values())):
        stored = checkpoint.metadata.get("clipsharp.head_classnames")
        if stored:
            try:
                names = json.loads(stored)
            except json.JSONDecodeError as e:
                raise CheckpointError(
                    f"{checkpoint.path}: clipsharp.head_classnames is not a JSON list ({e})"
                ) from e
            return [str(name) for name in names]
    return None

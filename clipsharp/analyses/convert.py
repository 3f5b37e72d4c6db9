"""``convert``: a pickled PyTorch checkpoint to safetensors — the one place a pickle is read.

The pickle is read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers only and refuses any other object without executing it. The state_dict
is found (a plain one, or under ``state_dict`` / ``model_state_dict`` / ``model``, other
keys such as ``epoch`` or ``optimizer`` ignored), a ``module.`` prefix (DataParallel,
DDP) is stripped, and the result is checked against the architecture before anything is
written, so the output is known to load in every clipsharp command.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import (
    Checkpoint,
    check_finite,
    check_regular_file,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from ..core.models import (
    Architecture,
    ClipClassifier,
    build_model,
    check_architecture,
    head_shape,
    resolve_architecture,
)
from ..errors import CheckpointError, ConfigError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts put it
PARALLEL_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel


@dataclass(frozen=True)
class Converted:
    """What ``convert_checkpoint`` wrote."""

    source: Path
    output: Path
    architecture: Architecture
    tensors: int  # number of tensors written
    parameters: int  # number of entries in them
    wrapper: str | None  # the key path the state_dict was under ("state_dict"), None: top level
    stripped_prefix: bool  # whether "module." was removed from every key


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    force: bool = False,
    allow_nonfinite: bool = False,
) -> Converted:
    """Write ``source`` (pickle or safetensors) as a safetensors checkpoint with metadata.

    Args:
        source: a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` pickle, or a ``.safetensors`` file
            (re-written with the architecture and provenance added).
        output: the ``.safetensors`` file to write, atomically; never the input.
        model: the architecture (open_clip name or config JSON); needed unless the input
            records it or has an ``open_clip_config.json`` beside it.
        force: replace ``output`` when it exists.
        allow_nonfinite: accept NaN / Inf weights.

    Returns:
        A :class:`Converted` describing the file written.

    Example:
        >>> convert_checkpoint("finetuned.pt", "finetuned.safetensors", model="ViT-B-32")
    """
    source, output = Path(source), Path(output)
    check_paths(source, output, force=force)
    sha256 = file_sha256(source)
    if source.suffix == ".safetensors":
        loaded = load_checkpoint(source, allow_nonfinite=allow_nonfinite)
        state, metadata, wrapper = loaded.tensors, loaded.metadata, None
    else:
        state, wrapper = unwrap(load_pickle(source), source)
        metadata = {}
    tensors, stripped = strip_prefix(tensors_only(state, source))
    if not allow_nonfinite:
        check_finite(tensors, source)
    checkpoint = Checkpoint(path=source, tensors=tensors, metadata=metadata)
    arch = resolve_architecture(checkpoint, model)
    _check_loads(checkpoint, arch)
    provenance = {
        "clipsharp.operation": "convert",
        "clipsharp.source": source.name,
        "clipsharp.source_sha256": sha256,
        "clipsharp.parameters": json.dumps(
            {"model": model, "wrapper": wrapper, "stripped_prefix": stripped}, sort_keys=True
        ),
    }
    kept = {k: v for k, v in metadata.items() if not k.startswith("clipsharp.")}
    save_checkpoint(output, _own_storage(tensors), kept | arch.metadata() | provenance)
    return Converted(
        source, output, arch, len(tensors), sum(t.numel() for t in tensors.values()), wrapper,
        stripped,
    )  # fmt: skip


def check_paths(source: Path, output: Path, *, force: bool) -> None:
    """Refuse, before any work: a missing input, ``-o`` equal to it, a bad or taken output."""
    if not source.exists():
        raise CheckpointError(f"checkpoint {source} does not exist")
    if source.is_dir():
        raise CheckpointError(f"checkpoint {source} is a folder; give the checkpoint file inside")
    check_regular_file(source)
    if output.resolve() == source.resolve():
        raise ConfigError(f"-o {output} is the input checkpoint; write to another file")
    if output.suffix != ".safetensors":
        raise ConfigError(f"-o {output}: give the output a .safetensors name")
    if not output.parent.is_dir():
        raise ConfigError(f"-o {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; give a file name")
    if output.exists() and not force:
        raise ConfigError(f"-o {output} exists; pass --force to replace it")


def load_pickle(source: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers, nothing executed."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: not for our users
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{source} holds objects other than tensors (an object of {found.group(1)}): "
                "code, which clipsharp will not run; in the code that made it, save "
                "model.state_dict() instead"
            ) from e
        raise CheckpointError(
            f"{source} is not a checkpoint of plain tensors ({_detail(e)}): it is corrupt, or "
            "holds code clipsharp will not run; save model.state_dict() with torch.save"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{source} is not a readable PyTorch checkpoint ({_detail(e)}); "
            "it may be truncated or corrupt: export it again"
        ) from e


def unwrap(loaded: Any, source: Path) -> tuple[Mapping, str | None]:
    """The state_dict inside common wrappers: ``{"state_dict": ...}``, ``{"model": ...}``, ...

    A mapping without tensors at its top level is a wrapper when it has one of
    :data:`WRAPPER_KEYS`; its other keys (epoch, optimizer, ...) are ignored.
    """
    path: list[str] = []
    while isinstance(loaded, Mapping) and not any(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        key = next((k for k in WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if key is None:
            break
        loaded, path = loaded[key], [*path, key]
    if not isinstance(loaded, Mapping):
        where = f" under {'.'.join(path)}" if path else ""
        raise CheckpointError(
            f"{source} holds a {type(loaded).__name__}{where}, not a state_dict; "
            "save model.state_dict() with torch.save"
        )
    return loaded, ".".join(path) or None


def tensors_only(state: Mapping, source: Path) -> dict[str, torch.Tensor]:
    """Refuse a state_dict entry that is not a plain (strided) tensor, naming its key."""
    if not state:
        raise CheckpointError(f"{source} holds no tensors; is it a model checkpoint?")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            wrappers = ", ".join(WRAPPER_KEYS)
            raise CheckpointError(
                f"{source}: entry {key!r} is of type {type(value).__name__}, not a tensor; store a "
                f"state_dict of tensors only (at the top level or under {wrappers})"
            )
        if value.layout != torch.strided or value.is_quantized:
            raise CheckpointError(
                f"{source}: {key} is a sparse or quantized tensor; store dense weights"
            )
        tensors[str(key)] = value
    return tensors


def strip_prefix(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Remove ``module.`` when every key has it (a DataParallel / DDP state_dict)."""
    if not all(key.startswith(PARALLEL_PREFIX) for key in tensors):
        return tensors, False
    return {key.removeprefix(PARALLEL_PREFIX): t for key, t in tensors.items()}, True


def _check_loads(checkpoint: Checkpoint, arch: Architecture) -> None:
    """Build the architecture and load the tensors into it, as every command will."""
    classifier = ClipClassifier(
        build_model(arch), head_shape=head_shape(checkpoint), device="cpu", dtype=torch.float32
    )
    check_architecture(classifier, checkpoint, arch)
    classifier.load(checkpoint.tensors)


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy tensors that share storage or view part of one (safetensors writes neither)."""
    seen: set[int] = set()
    owned = {}
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        shared = storage.data_ptr() in seen
        owned[key] = tensor if whole and not shared else tensor.clone()
        seen.add(storage.data_ptr())
    return owned


def _detail(error: BaseException) -> str:
    """The informative line of a torch.load error (its first lines are generic advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = [line.split("WeightsUnpickler error:", 1)[1].strip(), *lines[i + 1 : i + 2]]
            return next(text for text in [*rest, "unsupported content"] if text)
    generic = ("Weights only load failed", "Check the documentation")
    lines = [line for line in lines if not line.startswith(generic)]
    return lines[0][:200] if lines else type(error).__name__

"""``convert``: a pickled PyTorch checkpoint to safetensors — the one place a pickle is read.

The pickle is read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers only and refuses any other object without executing it. What it refuses
(a whole module saved by WiSE-FT, task vectors or model soups' code, a bare
``pickle.dump``, a TorchScript archive) is read by ``core/pickles.py``, which executes
nothing either: every class and function the pickle names becomes an inert stand-in, and
the state_dict is recovered from them. The state_dict is found (a plain one, a module, or
under ``state_dict`` / ``model_state_dict`` / ``model``, other keys such as ``epoch`` or
``optimizer`` ignored), a ``module.`` prefix (DataParallel, DDP) is stripped, its layout
recognised and read onto open_clip's keys (``core/families.py``), a separately saved head
attached (``--head``), and the result is checked against the architecture before anything
is written, so the output is known to load in every clipsharp command.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import families
from ..core.checkpoint import (
    Checkpoint,
    check_finite,
    check_regular_file,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from ..core.models import Architecture, build_classifier, resolve_architecture
from ..core.outputs import Paths, check_output
from ..core.outputs import check_paths as check_not_inputs
from ..core.pickles import Inert, Pickled, is_module, read_pickle, recover_state_dict
from ..errors import CheckpointError, ClipsharpError, ConfigError
from ..options import ConvertOptions, InputOptions

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts put it
PARALLEL_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel
HEAD_PREFIXES = ("", "head.", "classification_head.")  # where a head file keeps its tensors


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
    layout: str = families.OPEN_CLIP.name  # the layout recognised (core/families.py)
    head: Path | None = None  # the --head file attached

    def describe(self) -> str:
        """One line: what was read, how, and what was written."""
        how = [
            self.layout,
            f"from {self.wrapper!r}" if self.wrapper else "",
            "'module.' stripped" * self.stripped_prefix,
            f"head from {self.head.name}" if self.head else "",
        ]
        return (
            f"converted {self.source.name} ({', '.join(h for h in how if h)}) -> {self.output}: "
            f"{self.tensors} tensors, {self.parameters:,} parameters, architecture "
            f"{self.architecture.name} (from {self.architecture.source})"
        )


@dataclass(frozen=True)
class Found:
    """The state_dict of a checkpoint file, under open_clip's keys."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]  # a safetensors input's, else empty
    layout: families.Layout
    wrapper: str | None
    stripped_prefix: bool


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    model: str | None = None,
    head: str | Path | None = None,
    force: bool = False,
    allow_nonfinite: bool = False,
) -> Converted:
    """Write ``source`` (pickle or safetensors) as a safetensors checkpoint with metadata.

    Args:
        source: a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` pickle (a state_dict, a whole
            module, a TorchScript archive), or a ``.safetensors`` file (re-written with the
            architecture and provenance added).
        output: the ``.safetensors`` file to write, atomically; never the input.
        model: the architecture (open_clip name or config JSON); needed unless the input
            records it, has an ``open_clip_config.json`` beside it, or its shapes show a
            standard ViT CLIP (``core/shapes.py``).
        head: a separately saved classification head to attach (see :func:`read_head`).
        force: replace ``output`` when it exists.
        allow_nonfinite: accept NaN / Inf weights.

    Returns:
        A :class:`Converted` describing the file written.

    Example:
        >>> convert_checkpoint("finetuned.pt", "finetuned.safetensors", model="ViT-B-32")
    """
    source, output = Path(source), Path(output)
    check_paths(source, output, force=force)
    if head is not None and not Path(head).is_file():
        raise ConfigError(f"--head {head} does not exist; give the file of the head")
    sha256 = file_sha256(source)
    found = find_state(source, allow_nonfinite)
    tensors = found.tensors
    if head is not None:
        attached = read_head(Path(head))
        if not allow_nonfinite:
            check_finite(attached, head)
        tensors = attach_head(tensors, attached, source, Path(head))
    checkpoint = Checkpoint(path=source, tensors=tensors, metadata=found.metadata)
    arch = resolve_architecture(checkpoint, model, quick_gelu=found.layout.quick_gelu)
    _check_loads(checkpoint, arch)
    parameters = {
        "model": model,
        "wrapper": found.wrapper,
        "stripped_prefix": found.stripped_prefix,
        "layout": found.layout.name,
    }
    provenance = {
        "clipsharp.operation": "convert",
        "clipsharp.source": source.name,
        "clipsharp.source_sha256": sha256,
        "clipsharp.layout": found.layout.name,
    }
    if head is not None:
        parameters["head"] = Path(head).name
        provenance["clipsharp.head_source_sha256"] = file_sha256(Path(head))
    provenance["clipsharp.parameters"] = json.dumps(parameters, sort_keys=True)
    kept = {k: v for k, v in found.metadata.items() if not k.startswith("clipsharp.")}
    save_checkpoint(output, _own_storage(tensors), kept | arch.metadata() | provenance)
    return Converted(
        source,
        output,
        arch,
        len(tensors),
        sum(t.numel() for t in tensors.values()),
        found.wrapper,
        found.stripped_prefix,
        found.layout.name,
        Path(head) if head is not None else None,
    )


def find_state(source: Path, allow_nonfinite: bool = False) -> Found:
    """The tensors of ``source`` under open_clip's keys, with the layout they were in."""
    if source.suffix == ".safetensors":
        loaded = load_checkpoint(source, allow_nonfinite=allow_nonfinite)
        tensors, stripped = strip_prefix(loaded.tensors)
        layout = families.recognise(tensors.keys())
        return Found(
            families.to_open_clip(tensors, layout), loaded.metadata, layout, None, stripped
        )
    root, pickled = load_pickle(source)
    state, wrapper, attributes = unwrap(root, pickled, source)
    tensors, stripped = strip_prefix(tensors_only(state, source))
    top_level = [str(k) for k in root] if isinstance(root, Mapping) and wrapper else []
    layout = families.recognise(tensors.keys(), top_level)
    families.check_normalized(attributes, layout.head, source)
    tensors = families.to_open_clip(tensors, layout)
    if not allow_nonfinite:
        check_finite(tensors, source)
    return Found(tensors, {}, layout, wrapper, stripped)


def convert(
    sources: Sequence[Path],
    output: Path,
    options: ConvertOptions | None = None,
    inputs: InputOptions | None = None,
    *,
    reads: Paths = (),
) -> Iterator[tuple[Path, Converted | ClipsharpError]]:
    """The ``convert`` command: each of ``sources`` to ``output`` (one file), or into the
    folder ``output`` as NAME.safetensors. Every output is checked before any is written
    (writable, not an input: the sources, ``--head``, ``--model``, ``reads``); then yields,
    in order, what each conversion wrote or the error that stopped it (the others go on).
    """
    options, inputs = options or ConvertOptions(), inputs or InputOptions()
    pairs = plan_outputs(sources, output)
    if len(pairs) == 1 and pairs[0][1] == output:
        check_output(str(output))
    check_not_inputs(
        [("-o", target) for _, target in pairs],
        [
            *[("the input checkpoint", source) for source, _ in pairs],
            ("the --head file", options.head),
            ("the --model config", inputs.model),
            *reads,
        ],
    )
    return _each(pairs, options, inputs)


def _each(pairs, options: ConvertOptions, inputs: InputOptions) -> Iterator:
    for source, target in pairs:
        try:
            yield (
                source,
                convert_checkpoint(
                    source,
                    target,
                    model=inputs.model,
                    head=options.head,
                    force=options.force,
                    allow_nonfinite=inputs.allow_nonfinite,
                ),
            )
        except ClipsharpError as e:
            yield source, e


def plan_outputs(sources: Sequence[Path], output: Path) -> list[tuple[Path, Path]]:
    """Each input with the file it is written to: ``output`` itself for one input, else
    ``output/<input name>.safetensors`` (``output`` an existing folder, names distinct)."""
    if len(sources) == 1 and not output.is_dir():
        return [(sources[0], output)]
    if not output.is_dir():
        raise ConfigError(
            f"-o {output}: {len(sources)} checkpoints are written into a folder, and it is "
            "not one; create it first or give one checkpoint"
        )
    pairs = [(source, output / f"{source.stem}.safetensors") for source in sources]
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        if target in seen:
            raise ConfigError(
                f"{seen[target]} and {source} would both be written to {target}; convert "
                "them in separate commands, into different folders"
            )
        seen[target] = source
    return pairs


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


def load_pickle(source: Path) -> tuple[Any, Pickled | None]:
    """``torch.load(weights_only=True)``: tensors and plain containers, nothing executed;
    what it refuses, :func:`clipsharp.core.pickles.read_pickle` (its ``Pickled`` second)."""
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: not for our users
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True), None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
        pickled = read_pickle(source)  # a module, a bare pickle, a TorchScript archive
        return pickled.root, pickled


def unwrap(loaded: Any, pickled: Pickled | None, source: Path) -> tuple[Mapping, str | None, dict]:
    """The state_dict inside common wrappers: ``{"state_dict": ...}``, ``{"model": ...}``, ...;
    a module's read from its stand-ins (with the plain attributes of its modules, third).

    A mapping without tensors at its top level is a wrapper when it has one of
    :data:`WRAPPER_KEYS`; its other keys (epoch, optimizer, ...) are ignored.
    """
    path: list[str] = []
    while isinstance(loaded, Mapping) and not any(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        key = next((k for k in WRAPPER_KEYS if _is_state(loaded.get(k))), None)
        if key is None:
            break
        loaded, path = loaded[key], [*path, key]
    attributes: dict[str, Any] = {}
    if is_module(loaded):
        loaded, attributes = _module_state(loaded, pickled, source)
    elif isinstance(loaded, Inert) and loaded.items:  # an instance of a dict subclass
        loaded = loaded.items
    if not isinstance(loaded, Mapping):
        where = f" under {'.'.join(path)}" if path else ""
        what = (
            f"an object of {loaded.global_name}"
            if isinstance(loaded, Inert)
            else f"a {type(loaded).__name__}"
        )
        raise CheckpointError(
            f"{source} holds {what}{where}, not a state_dict nor a module; "
            "save model.state_dict() with torch.save"
        )
    return loaded, ".".join(path) or None, attributes


def _is_state(value: Any) -> bool:
    return isinstance(value, Mapping) or is_module(value)


def _module_state(module: Inert, pickled: Pickled, source: Path) -> tuple[dict, dict]:
    """A pickled module's state_dict and attributes, as ``nn.Module.state_dict`` has it."""
    try:
        recovered = recover_state_dict(module, pickled)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{source}: cannot read the state_dict of its {module.global_name} ({e}); "
            "save model.state_dict() with torch.save"
        ) from e
    return recovered.tensors, recovered.attributes


def read_head(path: Path) -> dict[str, torch.Tensor]:
    """A separately saved classification head as ``head.weight`` / ``head.bias``.

    Accepted: a whole ``ClassificationHead`` (or ``Linear``) module, pickled; a file of its
    tensors (``weight`` and ``bias``, also under ``head.`` or ``classification_head.``;
    safetensors or a pickle); a single (C, D) tensor, whose biases are then zero (as
    ``ClassificationHead`` makes them when it is given none). A head saved with
    ``normalize=False`` is refused (see ``families.check_normalized``).
    """
    if path.suffix == ".safetensors":
        state: Any = load_checkpoint(path, allow_nonfinite=True).tensors
        attributes: dict = {}
    else:
        root, pickled = load_pickle(path)
        if isinstance(root, torch.Tensor):
            root = {"weight": root, "bias": torch.zeros(root.shape[:1], dtype=root.dtype)}
        state, _, attributes = unwrap(root, pickled, path)
    families.check_normalized(attributes, "", path)
    for prefix in HEAD_PREFIXES:
        weight, bias = state.get(f"{prefix}weight"), state.get(f"{prefix}bias")
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            if bias is None:
                bias = torch.zeros(weight.shape[:1], dtype=weight.dtype)
            if isinstance(bias, torch.Tensor):
                return {"head.weight": weight, "head.bias": bias}
    raise CheckpointError(
        f"--head {path} holds no classification head (a weight of (classes, dimensions), "
        "with its bias); give a ClassificationHead, or a file of its weight and bias"
    )


def attach_head(
    tensors: dict[str, torch.Tensor], head: dict[str, torch.Tensor], source: Path, path: Path
) -> dict[str, torch.Tensor]:
    """``tensors`` with the head of ``--head path`` added; refuses a second head."""
    if "head.weight" in tensors:
        raise CheckpointError(
            f"{source} already holds a classification head; drop --head {path}, or convert "
            "a checkpoint without one"
        )
    families.check_head(head, tensors, f"--head {path}")
    return {**tensors, **head}


def tensors_only(state: Mapping, source: Path) -> dict[str, torch.Tensor]:
    """Refuse a state_dict entry that is not a plain (strided) tensor, naming its key."""
    if not state:
        raise CheckpointError(f"{source} holds no tensors; is it a model checkpoint?")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            wrappers = ", ".join(WRAPPER_KEYS)
            kind = value.global_name if isinstance(value, Inert) else type(value).__name__
            raise CheckpointError(
                f"{source}: entry {key!r} is of type {kind}, not a tensor; store a "
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
    build_classifier(arch, [checkpoint], device="cpu", dtype=torch.float32)


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

"""Safetensors checkpoints: validated reads, atomic writes, pair checks, sha256.

A checkpoint is one safetensors file holding an open_clip model's state_dict
(optionally with a classification head ``head.weight`` / ``head.bias``), or a
HuggingFace transformers ``CLIPModel`` folder, read onto open_clip's keys (``hf.py``).
Pickled checkpoints are never unpickled here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..files import file_sha256, write_atomic
from . import hf

__all__ = ["Checkpoint", "file_sha256", "load_checkpoint", "save_checkpoint", "validate_pair"]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2+


@dataclass
class Checkpoint:
    """A checkpoint read into memory (CPU tensors) with its string metadata."""

    path: Path  # the file, or the transformers folder, as given
    tensors: dict[str, torch.Tensor]  # open_clip keys
    metadata: dict[str, str]
    files: tuple[Path, ...] = ()  # the safetensors files behind ``path``, when not itself

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def sha256(self) -> str:
        """The file's sha256, read once (reports of several analyses share it).

        A transformers folder: that of its ``model.safetensors``; of shards, the sha256 of
        their ``sha256sum`` listing (``HASH  NAME`` lines, in order).
        """
        files = self.files or (self.path,)
        if len(files) == 1:
            return file_sha256(files[0])
        listing = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def format(self) -> str:
        """``transformers`` for a CLIPModel checkpoint, else ``open_clip``."""
        return self.metadata.get("clipsharp.format", "open_clip")


HUB_PREFIX = "hf-hub:"  # hf-hub:ORG/REPO[@REVISION], an open_clip model on the HuggingFace hub
PRETRAINED_PREFIX = "pretrained:"  # pretrained:MODEL/TAG, an open_clip pretrained tag
HUB_WEIGHTS = "open_clip_model.safetensors"
HUB_CONFIG = "open_clip_config.json"


def resolve_source(source: str | Path) -> Path:
    """A local file as it is; ``hf-hub:ORG/REPO[@REV]`` or ``pretrained:MODEL/TAG`` from the hub.

    A hub checkpoint is an open_clip repository (``open_clip_model.safetensors`` +
    ``open_clip_config.json``): both are fetched into the HuggingFace cache (or read
    from it with ``HF_HUB_OFFLINE=1``) and the weights' cached path returned, with the
    config beside it, where the architecture is found. A repository without them is read
    as a transformers ``CLIPModel`` (``config.json`` with ``model.safetensors`` or its
    shards): its cached snapshot folder is returned.
    """
    text = str(source)
    if text.startswith(PRETRAINED_PREFIX):
        text = HUB_PREFIX + _pretrained_repo(text.removeprefix(PRETRAINED_PREFIX))
    if not text.startswith(HUB_PREFIX):
        return Path(source)
    repo, _, revision = text.removeprefix(HUB_PREFIX).strip("/").partition("@")
    return _from_hub(text, repo, revision or None)


def _pretrained_repo(spec: str) -> str:
    import open_clip

    model, _, tag = spec.partition("/")
    cfg = open_clip.get_pretrained_cfg(model, tag) if tag else {}
    if not cfg.get("hf_hub"):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise CheckpointError(
            f"pretrained:{spec} is not an open_clip pretrained model on the HuggingFace hub; "
            f"write pretrained:MODEL/TAG, tags of {model}: {tags}"
        )
    return cfg["hf_hub"].strip("/")


def _from_hub(source: str, repo: str, revision: str | None) -> Path:
    """The cached open_clip weights of a hub repository, or, for a transformers ``CLIPModel``
    repository, its cached snapshot folder (config.json, weights or shards)."""
    from huggingface_hub import hf_hub_download

    def fetch(name: str) -> Path:
        return Path(hf_hub_download(repo, name, revision=revision))

    try:
        config, weights = fetch(HUB_CONFIG), fetch(HUB_WEIGHTS)
    except Exception as e:  # offline, not cached, no such repo or file: all mean the same here
        try:
            return _transformers_from_hub(fetch)
        except Exception:
            raise CheckpointError(
                f"{source}: cannot get an open_clip model ({HUB_CONFIG}, {HUB_WEIGHTS}) nor a "
                f"transformers CLIPModel ({hf.CONFIG} with {hf.WEIGHTS} or {hf.INDEX}) from "
                f"the HuggingFace hub ({type(e).__name__}); check the name, go online once to "
                "cache them, or download the files and pass the local path"
            ) from e
    if config.parent != weights.parent:
        raise CheckpointError(f"{source}: the hub cache holds its files in different folders")
    return weights


def _transformers_from_hub(fetch: Callable[[str], Path]) -> Path:
    """A transformers repository's snapshot folder, with its weights (one file or the shards
    its index lists) and, when the repository has it, its preprocessor config."""
    folder = fetch(hf.CONFIG).parent
    try:
        fetch(hf.WEIGHTS)
    except Exception:
        for shard in hf.shard_names(fetch(hf.INDEX)):
            fetch(shard)
    with contextlib.suppress(Exception):  # optional: mean and std of the image transform
        fetch(hf.PROCESSOR)
    return folder


def load_checkpoint(path: str | Path, *, allow_nonfinite: bool = False) -> Checkpoint:
    """Read a safetensors checkpoint, refusing files that are corrupt, pickled or non-finite.

    Args:
        path: the ``.safetensors`` file, a transformers ``CLIPModel`` folder (or its
            ``model.safetensors`` with ``config.json`` beside it), or a hub source (see
            :func:`resolve_source`).
        allow_nonfinite: accept NaN / Inf values instead of refusing them.

    Returns:
        The :class:`Checkpoint` with every tensor on the CPU, under open_clip's keys.
    """
    path = resolve_source(path)
    layout = hf.find_layout(path)
    if layout is not None:
        return _load_transformers(layout, allow_nonfinite)
    _check_readable(path)
    metadata, tensors = _read_safetensors(path)
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; is it a model checkpoint?")
    if not allow_nonfinite:
        check_finite(tensors, path)
    return Checkpoint(path=path, tensors=tensors, metadata=metadata)


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of one safetensors file, its header checked first."""
    from safetensors import SafetensorError, safe_open

    check_header(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_first_line(e)}); "
            "it may be truncated or corrupt: export or download it again"
        ) from e
    return metadata, tensors


def _load_transformers(layout: hf.Layout, allow_nonfinite: bool) -> Checkpoint:
    """A transformers CLIPModel (one file or shards), its tensors under open_clip's keys."""
    metadata: dict[str, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    for file in layout.weights:
        found, part = _read_safetensors(file)
        metadata |= found
        tensors |= part
    listed = hf.expected_keys(layout)
    if listed is not None and listed != tensors.keys():
        missing = sorted(listed ^ tensors.keys())
        raise CheckpointError(
            f"the shards of {layout.path} do not hold the keys their index lists "
            f"({_few(missing)}); save the model again"
        )
    tensors = hf.to_open_clip(tensors, layout.path)
    if not allow_nonfinite:
        check_finite(tensors, layout.path)
    metadata = {k: v for k, v in metadata.items() if k != "clipsharp.model"} | hf.describe(layout)
    return Checkpoint(layout.path, tensors, metadata, files=layout.weights)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder without a transformers {hf.CONFIG}; give the "
            ".safetensors file inside it"
        )
    check_regular_file(path)
    if not _looks_like_safetensors(path) and _looks_like_pickle(path):
        raise CheckpointError(
            f"{path} is a pickled PyTorch checkpoint, which clipsharp never unpickles; "
            f"convert it first: clipsharp convert {path} -o {path.with_suffix('.safetensors')}"
        )


def check_regular_file(path: Path) -> None:
    """Refuse a pipe (``<(cat zs.safetensors)``), a device or a socket as a checkpoint: its
    bytes are read more than once (header, tensors, sha256), which only a file allows."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} is not a regular file (a pipe or a device); a checkpoint is "
            "read more than once: save it to a file and give that"
        )


# bytes per element of each safetensors dtype (sub-byte float types are left to safetensors)
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
    "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header, in bytes


def check_header(path: Path) -> None:
    """Refuse, from the header alone, a file whose tensors do not fit in it.

    A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
    ``{key: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the data. Every
    ``end`` must lie within the data and equal ``begin`` + bytes(dtype) x prod(shape):
    a header that claims more (a sparse or truncated file, a forged shape) would
    otherwise be allocated before it is found out.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= min(size - 8, MAX_HEADER):
            raise _unreadable(path, f"a header of {length} bytes in a file of {size}")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _unreadable(path, f"its header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise _unreadable(path, "its header is not a JSON object")
    data = size - 8 - length
    for key, entry in header.items():
        if key != "__metadata__":
            _check_entry(path, key, entry, data)


def _check_entry(path: Path, key: str, entry: Any, data: int) -> None:
    """One tensor of the header: well formed, inside the data, as long as its shape says."""
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        claimed = math.prod(int(n) for n in shape)
        begin, end = int(begin), int(end)
    except (TypeError, KeyError, ValueError) as e:
        raise _unreadable(path, f"the header entry of {key} is malformed") from e
    if not 0 <= begin <= end <= data:
        raise _unreadable(
            path, f"the header puts {key} at bytes {begin}-{end} of {data} bytes of data"
        )
    width = DTYPE_BYTES.get(dtype)
    if width is not None and claimed * width != end - begin:
        raise _unreadable(
            path,
            f"the header gives {key} shape {list(shape)}, {claimed * width} bytes of {dtype}, "
            f"in {end - begin} bytes",
        )


def _unreadable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors file ({why}); it is truncated, corrupt or "
        "forged: export or download it again"
    )


def _looks_like_safetensors(path: Path) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    return 0 < header <= size - 8 and head[8:9] == b"{"


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return path.suffix in _PICKLE_SUFFIXES or head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC))


def check_finite(tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse NaN or Inf weights, naming the first offending tensor."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path} has NaN or Inf values in {key}; "
                "fix the checkpoint or pass --allow-nonfinite"
            )


def save_checkpoint(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write tensors atomically (temporary file in the same folder, fsync, rename).

    The metadata is stored with ``clipsharp.version`` added; all values must be strings.
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = {"clipsharp.version": __version__, **metadata}
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=dict(metadata))

    write_atomic(path, write)


def validate_pair(zero_shot: Checkpoint, fine_tuned: Checkpoint) -> None:
    """Refuse a pair that cannot be interpolated, naming the first offending keys.

    Both must hold the same keys with the same shapes and dtypes; integer and
    boolean tensors (never interpolated) must be equal.
    """
    if _same_checkpoint(zero_shot, fine_tuned):
        raise CheckpointError(
            f"the zero-shot {zero_shot.path} and the fine-tuned {fine_tuned.path} are the same "
            "checkpoint: the path between them is one point; give two different checkpoints"
        )
    zs, ft = zero_shot.tensors, fine_tuned.tensors
    only_zs, only_ft = sorted(zs.keys() - ft.keys()), sorted(ft.keys() - zs.keys())
    if only_zs or only_ft:
        parts = []
        if only_zs:
            parts.append(f"only {zero_shot.name} has {_few(only_zs)}")
        if only_ft:
            parts.append(f"only {fine_tuned.name} has {_few(only_ft)}")
        raise CheckpointError(
            f"checkpoints do not match: {'; '.join(parts)}; are both of the same architecture?"
        )
    for key in zs:
        a, b = zs[key], ft[key]
        if a.shape != b.shape:
            raise CheckpointError(
                f"checkpoints do not match at {key}: shape {tuple(a.shape)} in {zero_shot.name}, "
                f"{tuple(b.shape)} in {fine_tuned.name}; are both of the same architecture?"
            )
        if a.dtype != b.dtype:
            raise CheckpointError(
                f"checkpoints do not match at {key}: dtype {a.dtype} in {zero_shot.name}, "
                f"{b.dtype} in {fine_tuned.name}; save both in one dtype"
            )
        if not a.is_floating_point() and not torch.equal(a, b):
            raise CheckpointError(
                f"checkpoints differ at the integer tensor {key}, which cannot be interpolated; "
                "are they of the same model?"
            )


def _same_checkpoint(a: Checkpoint, b: Checkpoint) -> bool:
    """One file under two names, or two files of the same bytes (sha256)."""
    if not (a.path.exists() and b.path.exists()):
        return False  # in memory only
    return a.path.samefile(b.path) or a.sha256 == b.sha256


def _few(keys: Iterable[str], limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

"""Safetensors checkpoints: validated reads, atomic writes, pair checks, sha256.

A checkpoint is one safetensors file holding an open_clip model's state_dict
(optionally with a classification head ``head.weight`` / ``head.bias``), or a
HuggingFace transformers ``CLIPModel`` folder, read onto open_clip's keys (``hf.py``).
An image-tower-only checkpoint (WiSE-FT, model soups, task vectors) has no text
transformer: it classifies with its stored head. Pickled checkpoints are never
unpickled here: ``convert`` reads them (``pickles.py``).
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
from typing import Any, BinaryIO

import torch

from .. import __version__
from ..errors import CheckpointError, ReportError
from ..files import file_sha256, write_atomic
from . import hf

__all__ = [
    "Checkpoint", "file_sha256", "has_text_tower", "load_checkpoint", "save_checkpoint",
    "validate_pair",
]  # a table, aligned to read by column  # fmt: skip

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
    digests: tuple[str, ...] = ()  # sha256 of each file's bytes as they were read, in order

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def sha256(self) -> str:
        """The sha256 of the bytes the tensors were read from (reports of several analyses
        share it): hashed while they were read, so a file rewritten since is not mistaken for
        them. A checkpoint made in memory: its file's sha256 now.

        A transformers folder: that of its ``model.safetensors``; of shards, the sha256 of
        their ``sha256sum`` listing (``HASH  NAME`` lines, in order).
        """
        files = self.files or (self.path,)
        digests = self.digests or tuple(file_sha256(f) for f in files)
        if len(files) == 1:
            return digests[0]
        listing = "".join(f"{digest}  {f.name}\n" for digest, f in zip(digests, files, strict=True))
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def format(self) -> str:
        """``transformers`` for a CLIPModel checkpoint, else ``open_clip``."""
        return self.metadata.get("clipsharp.format", "open_clip")


TEXT_TOWER = ("transformer.", "text.")  # key prefixes of the text transformer (CLIP, custom text)


def has_text_tower(keys: Iterable[str]) -> bool:
    """False for an image-tower-only state_dict: no key of the text transformer."""
    return any(key.startswith(TEXT_TOWER) for key in keys)


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
    read = _read_safetensors(path)
    if not read.tensors:
        raise CheckpointError(f"{path} holds no tensors; is it a model checkpoint?")
    if not allow_nonfinite:
        check_finite(read.tensors, path)
    return Checkpoint(path, read.tensors, read.metadata, digests=(read.sha256,))


@dataclass(frozen=True)
class TensorFile:
    """One safetensors file as it was read: its metadata, its tensors, the sha256 of its bytes."""

    metadata: dict[str, str]
    tensors: dict[str, torch.Tensor]
    sha256: str


def _read_safetensors(path: Path) -> TensorFile:
    """One safetensors file read into memory once, hashed as it is read, its header checked.

    The tensors are views of those bytes (no memory map: a file rewritten or truncated
    while a run uses it cannot change its weights, nor kill it with a bus error), so the
    sha256 reports give is that of the weights used.
    """
    data, sha256 = _read_once(path)
    length = int.from_bytes(bytes(data[:8].numpy()), "little")
    header = parse_header(path, bytes(data[: 8 + min(length, MAX_HEADER)].numpy()), len(data))
    metadata = header.pop("__metadata__", None) or {}
    start = 8 + length
    tensors = {key: _view(data, start, entry) for key, entry in header.items()}
    if any(tensor is None for tensor in tensors.values()):  # a dtype torch names otherwise
        tensors = _decoded(path, data)
    return TensorFile({str(k): str(v) for k, v in dict(metadata).items()}, tensors, sha256)


READ_CHUNK = 64 << 20  # bytes read (and hashed) at a time


def _read_once(path: Path) -> tuple[torch.Tensor, str]:
    """The bytes of ``path`` (a uint8 tensor) and their sha256; a file that changed while it
    was read (size, mtime, ctime) is refused."""
    import os

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        data = torch.empty(before.st_size, dtype=torch.uint8)
        view, done = memoryview(data.numpy()), 0
        while done < len(data):
            count = f.readinto(view[done : done + READ_CHUNK])
            if not count:
                break
            digest.update(view[done : done + count])
            done += count
        longer = bool(f.read(1))
        after = os.fstat(f.fileno())
    stamps = [(s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in (before, after)]
    if done < len(data) or longer or stamps[0] != stamps[1]:
        raise CheckpointError(
            f"{path} changed while it was read ({before.st_size} bytes when opened, "
            f"{after.st_size} after): something is writing it; run again once it is written"
        )
    return data, digest.hexdigest()


def _torch_dtypes() -> dict[str, torch.dtype]:
    """safetensors' dtype names -> torch's, for those this torch has."""
    names = {
        "BOOL": "bool",
        "U8": "uint8",
        "I8": "int8",
        "I16": "int16",
        "U16": "uint16",
        "I32": "int32",
        "U32": "uint32",
        "I64": "int64",
        "U64": "uint64",
        "F16": "float16",
        "BF16": "bfloat16",
        "F32": "float32",
        "F64": "float64",
        "F8_E5M2": "float8_e5m2",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E8M0": "float8_e8m0fnu",
    }
    return {key: getattr(torch, name) for key, name in names.items() if hasattr(torch, name)}


def _view(data: torch.Tensor, start: int, entry: dict) -> torch.Tensor | None:
    """A tensor of the header as a view of the file's bytes (a copy when misaligned)."""
    import sys

    dtype = _torch_dtypes().get(entry["dtype"])
    if dtype is None or sys.byteorder != "little":
        return None
    begin, end = (start + int(offset) for offset in entry["data_offsets"])
    raw = data[begin:end]
    if begin % dtype.itemsize:  # torch views a dtype only at a multiple of its width
        raw = raw.clone()
    return raw.view(dtype).reshape([int(n) for n in entry["shape"]])


def _decoded(path: Path, data: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor decoded by safetensors from the bytes read (dtypes :func:`_view` lacks)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(bytes(data.numpy()))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_first_line(e)}); "
            "it may be truncated or corrupt: export or download it again"
        ) from e


def _load_transformers(layout: hf.Layout, allow_nonfinite: bool) -> Checkpoint:
    """A transformers CLIPModel (one file or shards), its tensors under open_clip's keys."""
    metadata: dict[str, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    digests = []
    for file in layout.weights:
        read = _read_safetensors(file)
        metadata |= read.metadata
        tensors |= read.tensors
        digests.append(read.sha256)
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
    return Checkpoint(layout.path, tensors, metadata, layout.weights, tuple(digests))


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
            f"{path} is a pickled PyTorch checkpoint, which only convert reads (executing "
            f"nothing): clipsharp convert {path} -o {path.with_suffix('.safetensors')}"
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
}  # a table, aligned to read by column  # fmt: skip
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
        parse_header(path, f.read(8 + MAX_HEADER), size)


def parse_header(path: Path, head: bytes, size: int) -> dict[str, Any]:
    """The header of a safetensors file of ``size`` bytes that begins with ``head``, checked
    as :func:`check_header` says."""
    length = int.from_bytes(head[:8], "little")
    if not 0 < length <= min(size - 8, MAX_HEADER):
        raise _unreadable(path, f"a header of {length} bytes in a file of {size}")
    try:
        header = json.loads(head[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _unreadable(path, f"its header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise _unreadable(path, "its header is not a JSON object")
    data = size - 8 - length
    for key, entry in header.items():
        if key != "__metadata__":
            _check_entry(path, key, entry, data)
    metadata = header.get("__metadata__")
    if metadata is not None and not isinstance(metadata, dict):
        raise _unreadable(path, "its __metadata__ is not a JSON object")
    return header


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
    The file is the safetensors format, written here tensor by tensor (see
    :func:`safetensors_header`): its errors are the ``OSError`` they are (a full disk names
    the file), it leaves no temporary file of its own, and it streams into a FIFO.
    """
    path = Path(path)
    metadata = {"clipsharp.version": __version__, **metadata}
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in tensors.items()}
    header, order = safetensors_header(tensors, metadata)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            write_tensors(file, header, [tensors[key] for key in order])

    write_atomic(path, write)


def write_tensors(file: BinaryIO, header: bytes, tensors: Iterable[torch.Tensor]) -> None:
    """The header, then each tensor's bytes (contiguous CPU tensors, in the header's order)."""
    file.write(header)
    for tensor in tensors:
        file.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def safetensors_header(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[bytes, list[str]]:
    """The 8-byte length and JSON header of a safetensors file of ``tensors``, and the order
    their bytes follow it in: widest dtype first, then by name, so each tensor starts at a
    multiple of its width (the header is padded with spaces to 8 bytes). Keys are sorted:
    the same tensors give the same bytes."""
    names = {dtype: name for name, dtype in _torch_dtypes().items()}
    order = sorted(tensors, key=lambda key: (-tensors[key].element_size(), key))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for key in order:
        tensor = tensors[key]
        if tensor.dtype not in names:
            raise CheckpointError(f"{key} has dtype {tensor.dtype}, which safetensors cannot store")
        size = tensor.numel() * tensor.element_size()
        entry = {"dtype": names[tensor.dtype], "shape": list(tensor.shape)}
        header[key] = entry | {"data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, order


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
    _check_same_towers(zero_shot, fine_tuned)
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


def _check_same_towers(zero_shot: Checkpoint, fine_tuned: Checkpoint) -> None:
    """Refuse a pair of which one is image-tower-only and the other has a text tower."""
    if has_text_tower(zero_shot.tensors) == has_text_tower(fine_tuned.tensors):
        return
    whole, alone = (zero_shot, fine_tuned)
    if not has_text_tower(zero_shot.tensors):
        whole, alone = fine_tuned, zero_shot
    raise CheckpointError(
        f"{alone.name} is image-tower-only (no text transformer, transformer.*) but "
        f"{whole.name} has a text tower: a pair must share one layout; give the other end "
        "as the same code saved it (e.g. WiSE-FT's zeroshot.pt with its checkpoint_N.pt)"
    )


def check_made_on(
    doc: dict, checkpoints: Mapping[str, Checkpoint | str | Path], source: str, fix: str
) -> None:
    """Refuse a report made on other checkpoints than these: the sha256 it records for each
    role must be that checkpoint's. ``source`` names the report as given (``--from r.json``),
    ``fix`` says what to give instead."""
    recorded = doc.get("inputs", {}).get("checkpoints", {})
    for role, checkpoint in checkpoints.items():
        path, sha = _path_and_sha256(checkpoint)
        there = (recorded.get(role) or {}).get("sha256")
        if there != sha:
            raise ReportError(
                f"{source} was made on another {role.replace('_', '-')} checkpoint than {path} "
                f"(sha256 {str(there)[:12]}... there, {sha[:12]}... here); {fix}"
            )


def _path_and_sha256(checkpoint: Checkpoint | str | Path) -> tuple[Path | str, str]:
    if isinstance(checkpoint, Checkpoint):
        return checkpoint.path, checkpoint.sha256
    local = resolve_source(checkpoint)  # a hub name: its file in the HuggingFace cache
    if not local.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint} does not exist; give a .safetensors file or hf-hub:ORG/REPO"
        )
    return checkpoint, file_sha256(local)


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

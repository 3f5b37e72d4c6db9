"""Tensors written back in the format of the checkpoint they came from.

An open_clip input gives a safetensors file with the architecture in its metadata. A
transformers ``CLIPModel`` input gives a folder that ``CLIPModel.from_pretrained`` loads:
the weights under transformers' names in ``model.safetensors``, the source's processor and
tokenizer files, and its ``config.json`` written last (a folder without it is recognisably
unfinished). ``merge`` and ``prune`` write through here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError, ClipsharpError, ConfigError
from ..files import check_writable, is_stream, write_atomic
from . import hf
from .checkpoint import Checkpoint, save_checkpoint
from .models import Architecture

HEAD_CLASSNAMES = "clipsharp.head_classnames"  # carried over with the head's tensors


def source_folder(source: Checkpoint) -> Path:
    """The transformers folder ``source`` was read from (given as the folder or a file in it)."""
    return source.path if source.path.is_dir() else source.path.parent


def folder_files(source: Checkpoint) -> tuple[str, ...]:
    """The names written into a transformers folder, ``config.json`` last."""
    companions = tuple(name for name in hf.COMPANIONS if (source_folder(source) / name).is_file())
    return (hf.WEIGHTS, *companions, hf.CONFIG)


def check_target(output: Path, form: str, flag: str = "-o") -> None:
    """Refuse, before any work, an output that cannot take this format."""
    if not output.parent.is_dir():
        raise ConfigError(
            f"{flag} {output}: folder {output.parent} does not exist; create it first"
        )
    if form != hf.FORMAT:
        if output.is_dir():
            raise ConfigError(f"{flag} {output} is a folder; give a .safetensors file name")
        check_writable(output, flag)  # a block device, a socket
        return
    if output.suffix == ".safetensors" or (output.exists() and not output.is_dir()):
        raise ConfigError(
            f"{flag} {output}: transformers checkpoints are written as a folder (config.json + "
            "model.safetensors, as save_pretrained writes); give a folder name"
        )
    allowed = {*hf.COMPANIONS, hf.WEIGHTS, hf.CONFIG}
    found = output.iterdir() if output.is_dir() else []
    other = sorted(p.name for p in found if p.name not in allowed)
    if other:
        raise ConfigError(
            f"{flag} {output} holds {other[0]}, which a checkpoint folder would not replace; "
            "choose a new or empty folder"
        )


def save_like(
    output: Path,
    tensors: Mapping[str, torch.Tensor],
    source: Checkpoint,
    arch: Architecture,
    provenance: Mapping[str, str],
) -> tuple[Path, ...]:
    """Write ``tensors`` (open_clip names) in ``source``'s format; return the files written.

    ``provenance``: string metadata saying how the tensors were made (operation, inputs'
    sha256, parameters); an open_clip file also gets the architecture.
    """
    if source.format == hf.FORMAT:
        return _write_transformers(output, tensors, source, provenance)
    metadata = arch.metadata()
    if HEAD_CLASSNAMES in source.metadata:
        metadata[HEAD_CLASSNAMES] = source.metadata[HEAD_CLASSNAMES]
    save_checkpoint(output, tensors, metadata | dict(provenance))
    return (output,)


def _write_transformers(
    output: Path, tensors: Mapping[str, torch.Tensor], source: Checkpoint, provenance
) -> tuple[Path, ...]:
    config = source.metadata.get("clipsharp.transformers_config")
    if config is None:
        raise CheckpointError(f"{source.path} has no transformers config; is it a CLIPModel?")
    names = folder_files(source)
    output.mkdir(exist_ok=True)
    # "format": "pt" is what transformers requires of a safetensors file's metadata
    save_checkpoint(
        output / hf.WEIGHTS, hf.to_transformers(tensors), {"format": "pt", **provenance}
    )
    folder = source_folder(source)
    for name in names[1:-1]:
        write_atomic(output / name, lambda tmp, name=name: shutil.copyfile(folder / name, tmp))
    write_atomic(output / hf.CONFIG, lambda tmp: tmp.write_text(config, encoding="utf-8"))
    return tuple(output / name for name in names)


def commit(staged: Path, output: Path) -> None:
    """Move a staged file, or the files of a staged folder (``config.json`` last), to ``output``.

    Into a character device or a FIFO, the staged file's bytes are written, never a rename.
    """
    try:
        if is_stream(output):
            write_atomic(output, lambda target: _copy(staged, target))
            staged.unlink()
            return
        if not staged.is_dir():
            staged.replace(output)
            return
        output.mkdir(exist_ok=True)
        names = sorted(p.name for p in staged.iterdir())
        for name in sorted(names, key=lambda name: name == hf.CONFIG):
            os.replace(staged / name, output / name)
        staged.rmdir()
    except OSError as e:
        kept = (
            f"{output} may be unfinished ({hf.CONFIG} is moved last)"
            if staged.is_dir()
            else "nothing was kept"
        )
        raise ClipsharpError(f"cannot write -o {output}: {e.strerror}; {kept}") from e


def _copy(staged: Path, target: Path) -> None:
    with open(staged, "rb") as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)


def discard(staged: Path) -> None:
    """Remove a staged file or folder, if it is there."""
    if staged.is_dir():
        shutil.rmtree(staged, ignore_errors=True)
    else:
        staged.unlink(missing_ok=True)

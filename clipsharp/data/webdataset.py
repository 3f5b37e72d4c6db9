"""clip_benchmark's webdatasets, read in place: ``classnames.txt`` and tar shards of
``KEY.jpg`` (or ``.webp``, ``.png``, ...) + ``KEY.cls``, in ``SPLIT/*.tar`` or ``*.tar``.

Examples are what ``datasets``' own ``webdataset`` builder makes of the shards: members
grouped by its key rule (``base_plus_ext``), images by its extension list, labels decoded
by its ``cls`` decoder, images by ``datasets.Image`` from the member's bytes. The builder
itself cannot serve the engine: ``load_dataset("webdataset", streaming=True)`` is an
iterable with no length and no row access (the engine shards rows over ranks, resumes
after a row, draws ``--limit`` subsets), and without streaming it writes every image's
bytes again into the HuggingFace cache. So the shards' tar headers are read once (no image
byte), each example's image is found by its offset and size in its shard, and read from
there as the engine asks for it. Nothing is copied, nothing is written to disk.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError
from .folders import fingerprint

if TYPE_CHECKING:
    import datasets

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
NSHARDS = "nshards.txt"
TOP = "test"  # the split of shards lying at the top of the folder
MEMBER = "tar member:"  # an image path of this module: MEMBER + JSON [shard, member, offset, size]


def is_webdataset(folder: Path) -> bool:
    """A folder with ``classnames.txt`` and tar shards at its top or one level down."""
    return (folder / CLASSNAMES).is_file() and bool(shard_folders(folder))


def shard_folders(folder: Path) -> dict[str, Path]:
    """Split -> the folder of its shards: each sub-folder holding ``*.tar``; the top's are TOP."""
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and _shards(p)}
    if _shards(folder):
        found.setdefault(TOP, folder)
    return found


def open_split(folder: Path, shards_at: Path, split: str) -> datasets.Dataset:
    """One split: a row per example, its image as a path to its bytes in a shard, its label a
    ClassLabel of ``classnames.txt``; fingerprinted by the shards' paths, sizes, mtimes and
    ctimes and the class names."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    classnames = read_lines(folder / CLASSNAMES)
    shards = _checked_shards(shards_at)
    examples = [example for shard in shards for example in _index(shard)]
    if not examples:
        raise DatasetError(f"webdataset {shards_at}: its shards hold no examples")
    image = examples[0][0]
    features = datasets.Features(
        {
            image: datasets.Image(decode=False),
            "cls": datasets.ClassLabel(names=classnames),
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
        }
    )
    columns = {
        image: [{"bytes": None, "path": path} for _, path, _, _, _ in examples],
        "cls": [label for _, _, label, _, _ in examples],
        "__key__": [key for _, _, _, key, _ in examples],
        "__url__": [url for *_, url in examples],
    }
    table = InMemoryTable(pa.Table.from_pydict(columns, schema=features.arrow_schema))
    info = datasets.DatasetInfo(features=features, builder_name="webdataset")
    digest = fingerprint([str(shard) for shard in shards], folder)  # + class names: load.py
    return datasets.Dataset(table, info=info, split=split, fingerprint=digest)


def read_templates(folder: Path) -> list[str] | None:
    """The dataset's prompt templates (``{c}`` as clip_benchmark writes them, or ``{}``),
    as ``{}`` templates; None when it has none."""
    path = folder / TEMPLATES
    if not path.is_file():
        return None
    lines = read_lines(path)
    bad = [t for t in lines if "{c}" not in t and "{}" not in t]
    if bad:
        raise DatasetError(f"{path}: line {bad[0]!r} has no {{c}} for the class name; fix it")
    return [t.replace("{c}", "{}") for t in lines]


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} cannot be read ({e}); give a UTF-8 file") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{path} is empty; write one entry per line")
    return lines


def is_member(path: str | None) -> bool:
    return bool(path) and path.startswith(MEMBER)


def member_bytes(path: str) -> bytes:
    """The bytes of the image a MEMBER path points at."""
    shard, _, offset, size = json.loads(path[len(MEMBER) :])
    with open(shard, "rb") as file:
        file.seek(offset)
        data = file.read(size)
    if len(data) != size:
        raise OSError(f"{shard} ends before the member's {size} bytes (truncated shard?)")
    return data


def member_name(path: str) -> str:
    """'SHARD member NAME', for messages."""
    shard, member, _, _ = json.loads(path[len(MEMBER) :])
    return f"{shard} member {member}"


def _shards(folder: Path) -> list[Path]:
    """The ``*.tar`` files of a folder, in numeric order when their names are numbers."""
    tars = [p for p in folder.iterdir() if p.suffix == ".tar" and p.is_file()]
    numeric = all(p.stem.isdigit() for p in tars)
    return sorted(tars, key=lambda p: (int(p.stem), p.name) if numeric else (0, p.name))


def _checked_shards(folder: Path) -> list[Path]:
    """The shards, all of them when ``nshards.txt`` says how many."""
    shards = _shards(folder)
    count = folder / NSHARDS
    if count.is_file():
        text = count.read_text(encoding="utf-8", errors="replace").strip()
        if not text.isdigit():
            raise DatasetError(f"{count} holds {text[:40]!r}, not a number of shards; fix it")
        if int(text) != len(shards):
            listed = ", ".join(p.name for p in shards[:5]) + (", ..." if len(shards) > 5 else "")
            raise DatasetError(
                f"{count} says {int(text)} shards but {folder} holds {len(shards)} ({listed}); "
                "is the download complete?"
            )
    return shards


def _index(shard: Path) -> Iterator[tuple[str, str, int, str, str]]:
    """(image field, image path, label, key, shard) of each example of one shard, from its
    tar headers and its ``.cls`` members (no image byte is read)."""
    from datasets.packaged_modules.webdataset.webdataset import (
        DECODERS,
        IMAGE_EXTENSIONS,
        base_plus_ext,
    )

    current: dict = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                key, field = base_plus_ext(member.name)
                if key is None or not member.isfile():
                    continue
                if current and current["__key__"] != key:
                    yield _example(shard, current)
                    current = {}
                if field in current:
                    raise DatasetError(f"{shard}: example {key!r} has two {field!r} members")
                current["__key__"] = key
                extension = field.rsplit(".", 1)[-1].lower()
                if extension in IMAGE_EXTENSIONS:
                    current[field] = (member.name, member.offset_data, member.size)
                elif field == "cls":
                    current[field] = DECODERS["cls"](tar.extractfile(member).read())
    except (tarfile.TarError, OSError, ValueError) as e:
        raise DatasetError(
            f"webdataset shard {shard} cannot be read ({type(e).__name__}: {e}); is it complete?"
        ) from e
    if current:
        yield _example(shard, current)


def _example(shard: Path, fields: dict) -> tuple[str, str, int, str, str]:
    key = fields.pop("__key__")
    images = [name for name, value in fields.items() if isinstance(value, tuple)]
    if len(images) != 1 or not isinstance(fields.get("cls"), int):
        raise DatasetError(
            f"webdataset shard {shard}: example {key!r} has {len(images)} images and "
            f"{'a' if 'cls' in fields else 'no'} .cls label; each needs one image and one label"
        )
    member, offset, size = fields[images[0]]
    path = MEMBER + json.dumps([str(shard), member, offset, size])
    return images[0], path, fields["cls"], key, str(shard)

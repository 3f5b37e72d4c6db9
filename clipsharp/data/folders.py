"""Image folders listed, not decoded: ``class_name/*.jpg`` (or ``train|validation|test/
class_name/*.jpg``) become splits of paths and labels in the time it takes to list them.

``datasets.load_dataset`` on a folder resolves its split patterns with a glob per pattern
and takes minutes for ImageNet's 50,000 files (47 s for the patterns alone); this module
walks the two levels once with ``os.scandir``. The labels are those of ``datasets``'
``imagefolder``: a ``ClassLabel`` of the sorted class-folder names, one row per image file
(its extensions, ``datasets.packaged_modules.imagefolder``), rows in path order. A layout
it does not recognise (metadata files, deeper folders, other files) is left to
``load_dataset``.

The fingerprint covers every file's relative path, size, ``st_mtime_ns`` and
``st_ctime_ns``, never less: replacing an image changes its ctime, which ``touch -r``
cannot set back, so a replaced image is never served from ``--data-cache``.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DatasetError

if TYPE_CHECKING:
    import datasets

SKIPPED_NAMES = (".", "__")  # hidden files and folders, as datasets skips them


@dataclass(frozen=True)
class ListedFolder:
    """The images of one image folder, by split: paths and class names, nothing decoded."""

    splits: dict[str, list[tuple[str, str]]]  # split -> (path, class folder) in path order
    classes: dict[str, list[str]]  # split -> sorted class-folder names that hold images
    empty: dict[str, list[str]]  # split -> class folders holding no image (left out)


def list_image_folder(root: Path) -> ListedFolder | None:
    """The image folder at ``root``, or None when its layout is one for ``load_dataset``."""
    folders = _visible(root)
    if folders is None or not folders:
        return None
    split_names = {name: _split_name(name) for name in folders}
    if all(split_names.values()):
        if len(set(split_names.values())) != len(folders):
            return None  # val/ and validation/: datasets merges them
        by_split = {split_names[name]: root / name for name in folders}
    elif any(_split_mentioned(name) for name in folders):
        return None  # datasets may read such a name as a split: leave it the same
    else:
        by_split = {"": root}
    listed: dict[str, list[tuple[str, str]]] = {}
    classes, empty = {}, {}
    for split, folder in by_split.items():
        found = _list_classes(folder)
        if found is None:
            return None
        split = split or _split_of_files(found[0])
        if split is None:
            return None
        listed[split], classes[split], empty[split] = found
    return ListedFolder(listed, classes, empty)


def _split_of_files(rows: list[tuple[str, str]]) -> str | None:
    """The split of a folder without split folders, as datasets names it: the one its file
    names all mention (ImageNet's ``ILSVRC2012_val_*``: validation), else ``train``; None
    when only some mention one (datasets would drop the others: left to it)."""
    mentioned = {_split_mentioned(os.path.basename(path)) for path, _ in rows}
    if len(mentioned) != 1:
        return None
    return mentioned.pop() or "train"


def dataset_of(listed: ListedFolder, split: str, root: Path):
    """One split as a ``datasets.Dataset`` of ``image`` (paths) and ``label`` (ClassLabel),
    fingerprinted by :func:`fingerprint` (files' paths, sizes, mtimes and ctimes)."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    names = listed.classes[split]
    index = {name: i for i, name in enumerate(names)}
    paths = [path for path, _ in listed.splits[split]]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    columns = {
        "image": [{"bytes": None, "path": path} for path in paths],
        "label": [index[name] for _, name in listed.splits[split]],
    }
    table = InMemoryTable(pa.Table.from_pydict(columns, schema=features.arrow_schema))
    info = datasets.DatasetInfo(features=features, builder_name="imagefolder")
    return datasets.Dataset(table, info=info, split=split, fingerprint=fingerprint(paths, root))


def by_stat(dataset: datasets.Dataset, root: Path) -> datasets.Dataset:
    """``dataset`` (as ``load_dataset`` read a folder) fingerprinted by :func:`fingerprint`
    when its one image column holds local files only; ``datasets``' own fingerprint covers
    only their mtimes."""
    import datasets

    images = [n for n, f in dataset.features.items() if isinstance(f, datasets.Image)]
    if len(images) != 1 or dataset._indices is not None:
        return dataset
    column = dataset.data.column(images[0]).combine_chunks()
    paths = column.field("path").to_pylist()
    if column.field("bytes").null_count != len(column) or None in paths:
        return dataset
    found = fingerprint(paths, root)
    return datasets.Dataset(dataset.data, info=dataset.info, split=dataset.split, fingerprint=found)


def fingerprint(paths: list[str], root: Path) -> str:
    """sha256 over each file's path (relative to ``root``), size, mtime_ns and ctime_ns."""
    digest, prefix = hashlib.sha256(), os.path.join(str(root), "")
    for path in paths:
        stat = os.stat(path)
        relative = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
        line = f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _list_classes(folder: Path) -> tuple[list[tuple[str, str]], list[str], list[str]] | None:
    """(path, class) of every image in ``folder/class/``, the classes holding images, the
    empty class folders; None when a class folder holds folders or files other than images."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = set(ImageFolder.EXTENSIONS)
    classes = _visible(folder)
    if classes is None or len(classes) < 2:
        return None  # one class folder: datasets reads it without labels, and says so
    rows, empty = [], []
    for name in classes:
        entries = _entries(folder / name)
        if entries is None or any(is_dir for _, is_dir in entries):
            return None
        files = [f for f, _ in entries if os.path.splitext(f)[1].lower() in extensions]
        if len(files) != len(entries):
            return None
        at = os.path.join(folder, name, "")
        rows += [(at + f, name) for f in files]
        if not files:
            empty.append(name)
    for path, _ in rows:
        _check_name(path)
    found = sorted({c for _, c in rows})
    if len(found) < 2:
        return None  # datasets reads one class without labels, and that is refused
    return rows, found, empty


def _visible(folder: Path) -> list[str] | None:
    """Sorted names of the sub-folders of ``folder``; None when it also holds files."""
    entries = _entries(folder)
    if entries is None or not all(is_dir for _, is_dir in entries):
        return None
    return [name for name, _ in entries]


def _entries(folder: Path) -> list[tuple[str, bool]] | None:
    """Sorted (name, is a folder) of the visible entries; None when it cannot be listed."""
    from datasets.data_files import FILES_TO_IGNORE

    try:
        with os.scandir(folder) as scan:
            found = [
                (entry.name, entry.is_dir())
                for entry in scan
                if not entry.name.startswith(SKIPPED_NAMES) and entry.name not in FILES_TO_IGNORE
            ]
    except OSError:
        return None
    return sorted(found)


def _check_name(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise DatasetError(
            f"image file {shown}: its name is not valid UTF-8 (byte {shown[e.start :][:4]}); "
            "rename it"
        ) from e


def _split_name(folder: str) -> str | None:
    """The split a folder named exactly like one of datasets' split keywords holds."""
    from datasets.data_files import SPLIT_KEYWORDS

    lowered = folder.lower()
    return next((str(s) for s, words in SPLIT_KEYWORDS.items() if lowered in words), None)


def _split_mentioned(name: str) -> str | None:
    """The first split whose keyword datasets' patterns find in ``name`` (a whole word
    between its separators ``-._ 0-9``), or None."""
    from datasets.data_files import NON_WORDS_CHARS, SPLIT_KEYWORDS

    separators = set(NON_WORDS_CHARS.replace("0-9", "")) | set(string.digits)
    lowered = name.lower()
    for split, words in SPLIT_KEYWORDS.items():
        for word in words:
            at = lowered.find(word)
            while at != -1:
                end = at + len(word)
                before = at == 0 or lowered[at - 1] in separators
                after = end == len(lowered) or lowered[end] in separators
                if before and after:
                    return str(split)
                at = lowered.find(word, at + 1)
    return None

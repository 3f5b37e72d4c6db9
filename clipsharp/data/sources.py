"""Finding and opening a dataset source: save_to_disk folders, image folders, files, hub names.

Every failure to read becomes a :class:`DatasetError` naming the spec; ``datasets`` is
imported inside functions because it is slow to import.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError
from . import webdataset
from .folders import by_stat, dataset_of, list_image_folder
from .specs import FILE_BUILDERS, GLOB_CHARS, DatasetSpec, is_local, local_path

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class Opened:
    """A source's splits, and what else its folder says about them."""

    splits: Mapping[str, datasets.Dataset]  # a webdataset's are indexed when asked for
    base_dir: Path | None  # where relative image paths start
    notes: dict[str, list[str]] = field(default_factory=dict)  # split -> said on stderr
    templates: list[str] | None = None  # the dataset's own prompt templates (webdatasets)


def open_source(spec: DatasetSpec) -> Opened:
    """The splits of a source, and the folder that relative image paths start from."""
    source, path = spec.source, local_path(spec.source)
    if GLOB_CHARS.search(source):
        files = sorted(Path(f) for f in glob.glob(str(path), recursive=True))
        if not files:
            raise dataset_error(spec, f"the pattern {source} matches no files")
        return Opened(_load_files(spec, files), files[0].parent)
    if path.is_dir():
        return _open_folder(spec, path)
    if path.is_file():
        return Opened(_load_files(spec, [path]), path.parent)
    if is_local(source):
        raise dataset_error(
            spec,
            f"{source} does not exist; give a folder written by save_to_disk, an image "
            "folder, a parquet/arrow/json/csv file, or a hub name",
        )
    return Opened(_load_hub(spec), None)


def _open_folder(spec: DatasetSpec, path: Path) -> Opened:
    """A save_to_disk folder, a webdataset, an image folder listed here, or any other folder
    ``load_dataset`` reads."""
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return Opened(_as_splits(guarded(spec, lambda: datasets.load_from_disk(str(path)))), path)
    if webdataset.is_webdataset(path):
        splits = _Lazy(
            {
                split: functools.partial(webdataset.open_split, path, at, split)
                for split, at in webdataset.shard_folders(path).items()
            }
        )
        return Opened(splits, path, templates=webdataset.read_templates(path))
    listed = list_image_folder(path.resolve())
    if listed is not None:
        splits = {split: dataset_of(listed, split, path.resolve()) for split in listed.splits}
        return Opened(splits, path, notes=_empty_notes(listed.empty, listed.classes))
    loaded = guarded(spec, lambda: datasets.load_dataset(str(path.resolve())))
    splits = {name: by_stat(split, path.resolve()) for name, split in _as_splits(loaded).items()}
    return Opened(splits, path)


class _Lazy(Mapping):
    """Splits opened when asked for: a webdataset indexes only the split it is read for."""

    def __init__(self, openers: dict[str, Callable[[], Any]]) -> None:
        self.openers = openers

    def __getitem__(self, split: str) -> Any:
        return self.openers[split]()

    def __iter__(self) -> Iterator[str]:
        return iter(self.openers)

    def __len__(self) -> int:
        return len(self.openers)


def _empty_notes(empty: dict[str, list[str]], classes: dict[str, list[str]]) -> dict:
    return {
        split: [
            f"class folder {name!r} holds no images and is left out: "
            f"{len(classes[split])} classes, not {len(classes[split]) + len(names)}"
            for name in names
        ]
        for split, names in empty.items()
    }


def _load_files(spec: DatasetSpec, files: list[Path]) -> dict[str, datasets.Dataset]:
    import datasets

    builders = {FILE_BUILDERS.get(f.suffix.lower().lstrip(".")) for f in files}
    if None in builders or len(builders) != 1:
        found = ", ".join(sorted({f.suffix or f.name for f in files}))
        raise dataset_error(
            spec, f"files must all be one of {', '.join(FILE_BUILDERS)}, got {found}"
        )
    data_files = [str(f.resolve()) for f in files]
    builder = builders.pop()
    return _as_splits(guarded(spec, lambda: datasets.load_dataset(builder, data_files=data_files)))


def _load_hub(spec: DatasetSpec) -> dict[str, datasets.Dataset]:
    """All splits of a hub dataset, or only the one named (from the cache when offline)."""
    import datasets

    try:
        loaded = datasets.load_dataset(spec.source, split=spec.split)
    except Exception as e:
        check_cache(e, spec)
        if isinstance(e, ValueError) and spec.split and "split" in str(e).lower():
            raise dataset_error(
                spec, reason(e)
            ) from e  # 'Unknown split "x". Should be one of [...]'
        raise DatasetError(
            f"dataset {spec.source!r} is not a local path and could not be loaded from the "
            f"HuggingFace hub (offline? HF_HUB_OFFLINE=1): {reason(e)}; give a local folder "
            "or file, or run once online to cache it"
        ) from e
    return {spec.split: loaded} if spec.split else _as_splits(loaded)


def _as_splits(loaded: Any) -> dict[str, datasets.Dataset]:
    """A DatasetDict's splits; a lone Dataset is its one split ('train' when it has no name)."""
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return {str(loaded.split) if loaded.split else "train": loaded}
    return dict(loaded)


def guarded(spec: DatasetSpec, load: Callable[[], Any]) -> Any:
    """Run a ``datasets`` call; any failure to read becomes a DatasetError naming the spec."""
    try:
        return load()
    except Exception as e:  # corrupt files, unreadable folders, parser errors of every kind
        check_cache(e, spec)
        raise dataset_error(
            spec, f"cannot be read: {reason(e)}; check the files are complete and supported"
        ) from e


def check_cache(error: BaseException, spec: DatasetSpec) -> None:
    """Blame the ``datasets`` cache, not the dataset, when the cache could not be written
    (a read-only or full HF_HOME): raise a DatasetError saying so."""
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE).absolute()
    fault = _cache_fault(error, cache)
    if fault is not None:
        raise DatasetError(
            f"the datasets cache {cache} cannot be written ({fault.strerror}), and reading "
            f"dataset {spec.text!r} needs it; set HF_HOME (or HF_DATASETS_CACHE) to a folder "
            "you can write to"
        ) from error


CACHE_FAULTS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def _cache_fault(error: BaseException | None, cache: Path) -> OSError | None:
    """The OSError in ``error``'s chain that failed to write in (or to create) ``cache``."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in CACHE_FAULTS and error.filename:
            where = Path(str(error.filename)).absolute()
            if where == cache or cache in where.parents or where in cache.parents:
                return error
        error = error.__cause__ or error.__context__
    return None


def dataset_error(spec: DatasetSpec, message: str) -> DatasetError:
    return DatasetError(f"dataset {spec.text!r}: {message}")


def reason(e: BaseException) -> str:
    """The exception's type and first line, at most 200 characters."""
    first = (str(e).strip().splitlines() or [""])[0]
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence the progress bars of ``datasets``; the caller shows its own."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()

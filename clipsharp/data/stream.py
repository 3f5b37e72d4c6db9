"""Images streamed in batches: decoded in DataLoader workers, never held whole (DESIGN §6).

A dataset's images are read on demand, in order, for one range of rows (a rank's shard, or
what is left of it after ``--resume``). Workers decode, resize and crop; they hand over
**uint8** crops (3 bytes a pixel instead of 12), and the cheap tail of the transform
(``/ 255``, normalisation) runs where the model is, in :meth:`ImageTransform.finish`. The
numbers are those of the whole transform run image by image: the same elementwise
operations, in the same order.

With ``--data-cache DIR`` the crops of a range are written once to
``DIR/<fingerprint>-<start>-<stop>.npy`` (with a BLAKE2b digest of every row beside it,
``...rows.npy``) and read back memory-mapped, a batch at a time, by every later run over
the same rows and transform; a row that does not match its digest is never used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import DatasetError
from ..files import write_atomic
from .sources import reason
from .webdataset import is_member, member_bytes, member_name

if TYPE_CHECKING:
    from PIL import Image

Transform = Callable[["Image.Image"], torch.Tensor]  # PIL image (RGB) -> (3, H, W)
TO_TENSOR = ("ToTensor", "MaybeToTensor")  # torchvision's and open_clip's: pixels / 255
NORMALIZE = "Normalize"


@dataclass(frozen=True)
class ImageTransform:
    """A model's eval transform, split where the pixels become floats.

    ``host`` runs in the workers: PIL image -> (3, H, W) uint8 when the transform ends in
    ToTensor [+ Normalize] (then ``finish`` divides by 255 and normalises), else the whole
    transform, and ``finish`` only moves the floats.
    """

    whole: Transform  # the transform as given (its repr is part of the data fingerprint)
    before: Transform | None  # PIL -> PIL steps before ToTensor; None: not split
    mean: tuple[float, ...] | None  # Normalize's mean and std, when it follows ToTensor
    std: tuple[float, ...] | None

    @classmethod
    def split(cls, transform: Transform) -> ImageTransform:
        """Split ``Compose([..PIL steps.., ToTensor, Normalize?])``; anything else stays whole."""
        from torchvision import transforms

        steps = list(getattr(transform, "transforms", []))
        names = [type(step).__name__ for step in steps]
        at = next((i for i, name in enumerate(names) if name in TO_TENSOR), None)
        tail = names[at + 1 :] if at is not None else None
        if not isinstance(transform, transforms.Compose) or tail not in ([], [NORMALIZE]):
            return cls(transform, None, None, None)
        normalize = steps[at + 1] if tail else None
        if normalize is not None and getattr(normalize, "inplace", False):
            return cls(transform, None, None, None)
        mean = tuple(float(v) for v in normalize.mean) if normalize else None
        std = tuple(float(v) for v in normalize.std) if normalize else None
        return cls(transform, transforms.Compose(steps[:at]), mean, std)

    def host(self, image: Image.Image) -> torch.Tensor:
        """What a worker hands over: (3, H, W) uint8, or the whole transform's floats."""
        if self.before is None:
            return torch.as_tensor(self.whole(image))
        from torchvision.transforms.functional import pil_to_tensor

        return pil_to_tensor(self.before(image))

    def finish(self, images: torch.Tensor, device: torch.device, dtype: torch.dtype):
        """(B, 3, H, W) host tensors -> the model's input on ``device``, in ``dtype``.

        ToTensor's ``x / 255`` and Normalize's ``(x - mean) / std`` in float32, as torchvision
        computes them image by image, then one cast into the working dtype.
        """
        images = images.to(device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
            if self.mean is not None:
                mean = torch.tensor(self.mean, device=device).view(-1, 1, 1)
                std = torch.tensor(self.std, device=device).view(-1, 1, 1)
                images = images.sub_(mean).div_(std)
        return images.to(dtype)


class _Rows(torch.utils.data.Dataset):
    """Rows of one image column, decoded, made RGB and through ``transform.host``.

    An item is ``(row, tensor, None)`` or ``(row, None, reason)``: the main process reports a
    bad image as a DatasetError, never as a worker's traceback.
    """

    def __init__(self, source: ImageSource, positions: range):
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        source, position = self.source, self.positions[i]
        row, value = int(source.rows[position]), None
        try:
            value = source.dataset[position][source.column]
            image = _to_rgb(_open_image(value, source.base_dir))
            return row, source.transform.host(image), None
        except Exception as e:  # PIL and datasets raise many types for a bad file
            return row, None, f"{image_name(value, row, source.base_dir)} ({reason(e)})"


@dataclass(frozen=True)
class ImageSource:
    """The images of one dataset split: what to decode, and how. Holds no pixels."""

    describe: str  # the spec as the user wrote it, for error messages
    dataset: Any  # datasets.Dataset holding the image column, one row per example
    column: str
    rows: np.ndarray  # (N,) row of each example in the split, for error messages
    base_dir: Path | None  # where relative image paths start
    transform: ImageTransform
    fingerprint: str
    num_workers: int = 0
    cache_dir: Path | None = None  # --data-cache

    def __len__(self) -> int:
        return len(self.rows)

    def batches(
        self, shard: range, batch_size: int, *, skip: int = 0, pin: bool = False
    ) -> Iterator[torch.Tensor]:
        """(B, 3, H, W) host tensors of the rows ``shard[skip:]``, in order, by ``batch_size``.

        With a data cache, a shard read from its start is written to the cache as it goes;
        a cached shard is read from the cache, from any ``skip``.
        """
        cached = self._cache_file(shard)
        if cached is not None and cached.is_file():
            found = _read_cache(cached, len(shard), batch_size, skip)
            if found is not None:
                yield from found
                return
        writer = _CacheWriter(cached, len(shard)) if cached is not None and not skip else None
        for batch in self._decode(shard[skip:], batch_size, pin):
            if writer is not None:
                writer.add(batch)
            yield batch
        if writer is not None:
            writer.close()

    def _decode(self, positions: range, batch_size: int, pin: bool) -> Iterator[torch.Tensor]:
        if not len(positions):
            return
        loader = torch.utils.data.DataLoader(
            _Rows(self, positions),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            pin_memory=pin,
        )
        yield from loader

    def _collate(self, items: list) -> torch.Tensor:
        """One (B, 3, H, W) tensor; a bad image or a transform without a fixed size is named."""
        shape = None
        for row, tensor, why in items:
            if tensor is None:
                raise DatasetError(
                    f"dataset {self.describe!r}: cannot read {why}; replace or remove it, or "
                    "pass --skip-bad-images to leave such images out"
                )
            if shape is not None and tensor.shape != shape:
                raise DatasetError(
                    f"dataset {self.describe!r}: the transform gave row {row} shape "
                    f"{tuple(tensor.shape)}, not {tuple(shape)}; it must resize and crop to "
                    "one size"
                )
            shape = tensor.shape
        tensors = [tensor for _, tensor, _ in items]
        if tensors[0].dtype != torch.uint8:
            return torch.stack(tensors)
        # pil_to_tensor gives (3, H, W) views of (H, W, 3) pixels: stack the pixels as they
        # lie, with numpy (a plain copy: torch.stack runs on the intra-op threads, which can
        # wait 0.5 s for a busy core), and hand over a (B, 3, H, W) view; the engine makes
        # it contiguous once per block, on the device
        pixels = torch.from_numpy(np.stack([t.permute(1, 2, 0).numpy() for t in tensors]))
        return pixels.permute(0, 3, 1, 2)

    def _cache_file(self, shard: range) -> Path | None:
        if self.cache_dir is None or not len(shard):
            return None
        folder = Path(self.cache_dir).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"--data-cache {folder} cannot be created ({e.strerror})") from e
        return folder / f"{self.fingerprint}-{shard.start}-{shard.stop}.npy"


def unreadable(source: ImageSource) -> list[tuple[int, str]]:
    """(position, what and why) of every image that cannot be decoded and transformed, in
    order: each image is decoded once, by the same code as the stream (--skip-bad-images)."""
    loader = torch.utils.data.DataLoader(
        _Rows(source, range(len(source))),
        batch_size=64,
        num_workers=source.num_workers,
        collate_fn=_failures,
    )
    found, done = [], 0
    for batch in loader:
        found += [(done + offset, why) for offset, why in batch]
        done += 64
    return found


def _failures(items: list) -> list[tuple[int, str]]:
    return [(offset, why) for offset, (_, tensor, why) in enumerate(items) if tensor is None]


def _read_cache(path: Path, count: int, batch_size: int, skip: int) -> _CachedBatches | None:
    """The cached crops as a lazy sequence of batches, or None when the entry is unusable
    (absent, of another size, or without its row digests): it is then made again."""
    try:
        shape = np.load(path, mmap_mode="r").shape
        digests = np.load(_digests_path(path))
    except (OSError, ValueError):
        return None
    if len(shape) != 4 or shape[0] != count or digests.shape != (count,):
        return None
    return _CachedBatches(path, digests, range(skip, count), batch_size)


class _CachedBatches:
    """Batches read from a cache file, memory-mapped once per batch and unmapped after the
    copy, so the resident memory stays one batch however large the file. Every row is
    checked against the digest written with it: a damaged entry is removed and refused."""

    def __init__(self, path: Path, digests: np.ndarray, positions: range, batch_size: int):
        self.path, self.digests = path, digests
        self.positions, self.batch_size = positions, batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(self.positions.start, self.positions.stop, self.batch_size):
            stop = min(start + self.batch_size, self.positions.stop)
            mapped = np.load(self.path, mmap_mode="r")
            batch = np.array(mapped[start:stop])
            del mapped
            for offset, row in enumerate(batch):
                if _digest(row) != self.digests[start + offset]:
                    self._remove()
                    raise DatasetError(
                        f"--data-cache entry {self.path} is damaged (row {start + offset} does "
                        "not match its digest); it was removed: run again to rebuild it"
                    )
            yield torch.from_numpy(batch)

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)
        _digests_path(self.path).unlink(missing_ok=True)


class _CacheWriter:
    """Fills ``PATH.partial`` batch by batch, with a digest of every row; both are renamed
    into place once every row is in, the digests first (an entry is complete or absent)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self.partial = path, path.with_name(path.name + ".partial")
        self.count, self.done = count, 0
        self.array: np.memmap | None = None
        self.digests = np.zeros(count, dtype=np.uint64)

    def add(self, batch: torch.Tensor) -> None:
        rows = batch.numpy()
        if self.array is None:
            dtype = np.uint8 if batch.dtype == torch.uint8 else np.float32
            shape = (self.count, *batch.shape[1:])
            self.array = np.lib.format.open_memmap(self.partial, "w+", dtype, shape)
        self.array[self.done : self.done + len(batch)] = rows
        for offset, row in enumerate(rows):
            self.digests[self.done + offset] = _digest(row)
        self.done += len(batch)

    def close(self) -> None:
        if self.array is None or self.done != self.count:
            return
        self.array.flush()
        del self.array
        write_atomic(_digests_path(self.path), self._save_digests)
        self.partial.replace(self.path)  # streamed into a memmap, then renamed: atomic too

    def _save_digests(self, tmp: Path) -> None:
        with open(tmp, "wb") as file:  # np.save would add .npy to a path
            np.save(file, self.digests)


def _digests_path(path: Path) -> Path:
    return path.with_name(path.stem + ".rows.npy")


def _digest(row: np.ndarray) -> np.uint64:
    """8 bytes of BLAKE2b over a row's bytes."""
    return np.frombuffer(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), np.uint64)[0]


def _open_image(value: Any, base_dir: Path | None) -> Image.Image:
    """A decoded image: given, opened from a path (relative to the dataset's folder), or
    decoded by ``datasets.Image`` from an image column's ``{"bytes", "path"}`` (the bytes of
    a webdataset's member read from its shard)."""
    import datasets
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and {"bytes", "path"} <= set(value):
        path, data = value["path"], value["bytes"]
        if data is None and is_member(path):
            data = member_bytes(path)
        elif data is None and path is not None:
            path = str(_located(path, base_dir))
        return datasets.Image().decode_example({"path": path, "bytes": data})
    if not isinstance(value, str):
        raise TypeError(f"expected an image or a file path, got {type(value).__name__}")
    return Image.open(_located(value, base_dir))


def _located(path: str, base_dir: Path | None) -> Path:
    found = Path(path).expanduser()
    return found if found.is_absolute() or base_dir is None else base_dir / found


def image_name(value: Any, row: int, base_dir: Path | None) -> str:
    """The file an image comes from, for messages: its path, its shard and member, or its row."""
    path = value.get("path") if isinstance(value, dict) else value
    stored = isinstance(value, dict) and value.get("bytes") is not None  # in the dataset
    if isinstance(path, str) and is_member(path):
        return member_name(path)
    if isinstance(path, str) and path and not stored:
        return f"image file {_located(path, base_dir)}"
    return f"the image of row {row}" + (f" ({path})" if stored and path else "")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as open_clip's own preprocessing makes it (alpha dropped, not composited)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")

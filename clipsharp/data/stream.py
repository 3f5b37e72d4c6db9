"""Images streamed in batches: decoded in DataLoader workers, never held whole
(docs/architecture.md, the engine's contract).

A dataset's images are read on demand, in order, for one range of rows (a rank's shard, or
what is left of it after ``--resume``). Workers decode, resize and crop; they hand over
**uint8** crops (3 bytes a pixel instead of 12), and the cheap tail of the transform
(``/ 255``, normalisation) runs where the model is, in :meth:`ImageTransform.finish`. The
numbers are those of the whole transform run image by image: the same elementwise
operations, in the same order.

With ``--data-cache DIR`` the crops of a range are written once to
``DIR/<fingerprint>-<start>-<stop>.npy`` (with a BLAKE2b digest of every row beside it,
``...rows.npy``) and read back memory-mapped, a batch at a time, by every later run over
the same rows and transform; a row that does not match its digest is never used (see
``cache.py``).

With ``--decode cuda`` (``decode_device``) the workers hand over a JPEG's bytes instead, and
the batch is decoded, resized and cropped on the GPU by torchvision (nvJPEG), through the
same steps as the transform's PIL part; any other image (PNG, WebP, a JPEG nvJPEG refuses)
takes the PIL path, with one note per pass. torchvision's decoder accepts device='cpu' too,
which is how the tests check this path without a GPU.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from . import cache
from .sources import reason
from .webdataset import is_member, member_bytes, member_name

if TYPE_CHECKING:
    from PIL import Image

Transform = Callable[["Image.Image"], torch.Tensor]  # PIL image (RGB) -> (3, H, W)
TO_TENSOR = ("ToTensor", "MaybeToTensor")  # torchvision's and open_clip's: pixels / 255
NORMALIZE = "Normalize"
TO_RGB = ("MaybeConvertMode", "_convert_to_rgb")  # open_clip's RGB steps: decode_jpeg gives RGB
JPEG = b"\xff\xd8\xff"  # the first bytes of every JPEG file


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

    def on_tensors(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``before`` on a (3, H, W) uint8 tensor (for --decode cuda): its Resize (antialiased,
        as PIL resizes) and CenterCrop; its RGB step is dropped (the decoder gives RGB)."""
        from torchvision import transforms

        if self.before is None:
            raise ConfigError(
                f"--decode cuda: the model's transform {self.whole!r} does not end in "
                "ToTensor [+ Normalize], so it cannot run on the GPU; use --decode cpu"
            )
        steps = []
        for step in self.before.transforms:
            name = getattr(step, "__name__", type(step).__name__)
            if isinstance(step, transforms.Resize):  # antialiased whatever it says: as PIL
                steps.append(transforms.Resize(step.size, step.interpolation, step.max_size, True))
            elif isinstance(step, transforms.CenterCrop):
                steps.append(step)
            elif name not in TO_RGB:
                raise ConfigError(
                    f"--decode cuda: the transform step {step!r} works on PIL images only; "
                    "use --decode cpu"
                )
        return transforms.Compose(steps)

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
    decode_device: torch.device | None = None  # --decode cuda: where JPEGs are decoded

    def __post_init__(self) -> None:
        if self.decode_device is not None:
            self.transform.on_tensors()  # refuses a transform that cannot run on tensors

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def decoder(self) -> str:
        """What decodes the JPEGs, as reports record it: ``pil``, or ``torchvision:DEVICE``."""
        return "pil" if self.decode_device is None else f"torchvision:{self.decode_device.type}"

    def batches(
        self, shard: range, batch_size: int, *, skip: int = 0, pin: bool = False
    ) -> Iterator[torch.Tensor]:
        """(B, 3, H, W) host tensors of the rows ``shard[skip:]``, in order, by ``batch_size``
        (on ``decode_device`` when it decodes). ``pin``: in pinned host memory.

        With a data cache, a shard read from its start is written to the cache as it goes;
        a cached shard is read from the cache, from any ``skip``. A pass that stops before
        the end of the shard leaves no partial cache file.
        """
        cached = self._cache_file(shard)
        if cached is not None and cached.is_file():
            found = cache.read(cached, len(shard), batch_size, skip, pin)
            if found is not None:
                yield from found
                return
        writer = cache.CacheWriter(cached, len(shard)) if cached is not None and not skip else None
        try:
            for batch in self._decode(shard[skip:], batch_size, pin):
                if writer is not None:
                    writer.add(batch)
                yield batch
            if writer is not None:
                writer.close()
        finally:
            if writer is not None:
                writer.abort()  # nothing after close; else the partial file goes

    def _decode(self, positions: range, batch_size: int, pin: bool) -> Iterator[torch.Tensor]:
        """Batches decoded by the workers, each a chunk of a batch at a time (see ``_chunk``),
        joined here in order: the same batches, ready sooner."""
        if not len(positions):
            return
        on_device = self.decode_device is not None
        chunk = _chunk(batch_size, self.num_workers)
        loader = torch.utils.data.DataLoader(
            (_Encoded if on_device else _Rows)(self, positions),
            batch_size=chunk,
            num_workers=self.num_workers,
            collate_fn=list if on_device else self._collate,
            pin_memory=pin and not on_device and chunk == batch_size,
        )
        batches = _grouped(iter(loader), batch_size // chunk)
        if not on_device:
            yield from (self._join(chunks, pin and chunk != batch_size) for chunks in batches)
            return
        noted, side = False, _side_stream(self.decode_device)
        for chunks in batches:
            items = [item for part in chunks for item in part]
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                batch, on_cpu = self._decode_jpegs(items)
            if side is not None:  # this thread waits, not the model's: the batch is ready
                side.synchronize()
            if on_cpu and not noted:
                noted = True
                print(
                    f"note: dataset {self.describe!r}: {on_cpu} of {len(items)} images of a "
                    "batch are not JPEGs torchvision decodes; they are decoded on the CPU "
                    "(PIL)",
                    file=sys.stderr,
                )
            yield batch

    def _join(self, chunks: list[torch.Tensor], pin: bool) -> torch.Tensor:
        """Chunks of a batch as one (B, 3, H, W) tensor, in pinned memory with ``pin``. uint8
        chunks are views of (n, H, W, 3) pixels: those are joined with numpy, as ``_collate``
        stacks them, into one buffer, and the batch is its (B, 3, H, W) view."""
        if len(chunks) == 1 and not pin:
            return chunks[0]
        shapes = {tuple(chunk.shape[1:]) for chunk in chunks}
        if len(shapes) > 1:
            raise DatasetError(
                f"dataset {self.describe!r}: the transform gave crops of shapes "
                f"{sorted(shapes)}; it must resize and crop to one size"
            )
        if chunks[0].dtype != torch.uint8:
            joined = torch.cat(chunks)
            return joined.pin_memory() if pin else joined
        pixels = [chunk.permute(0, 2, 3, 1).numpy() for chunk in chunks]
        shape = (sum(len(p) for p in pixels), *pixels[0].shape[1:])
        joined = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        np.concatenate(pixels, out=joined.numpy())
        return joined.permute(0, 3, 1, 2)

    def _decode_jpegs(self, items: list) -> tuple[torch.Tensor, int]:
        """One (B, 3, H, W) uint8 batch on ``decode_device`` from ``_Encoded`` items, and how
        many of its images took the PIL path."""
        jpegs = [k for k, (_, tensor, _) in enumerate(items) if _is_encoded(tensor)]
        encoded = [items[k][1] for k in jpegs]
        decoded = dict(zip(jpegs, _decode_jpeg(encoded, self.decode_device), strict=True))
        steps = self.transform.on_tensors()
        crops, on_cpu = [], 0
        for k, (row, tensor, why) in enumerate(items):
            if decoded.get(k) is not None:
                crops.append((row, steps(decoded[k]), None))
                continue
            if _is_encoded(tensor):  # a JPEG torchvision refuses (CMYK, damaged): PIL's turn
                tensor, why = _pil_crop(tensor, self.transform)
            on_cpu += 1
            crops.append((row, tensor, why))
        if any(c is None or c.shape != crops[0][1].shape for _, c, _ in crops):
            self._collate([(row, None if c is None else c.cpu(), why) for row, c, why in crops])
        device = self.decode_device
        return torch.stack([c.to(device, non_blocking=True) for _, c, _ in crops]), on_cpu

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
        return cache.entry(self.cache_dir, self.fingerprint, shard)


class _Encoded(_Rows):
    """Rows as stored: a JPEG's bytes, (N,) uint8, decoded later on the source's
    ``decode_device``; any other image through the PIL path, as ``_Rows`` gives it."""

    def __init__(self, source: ImageSource, positions: range):
        super().__init__(source, positions)
        self.stored = source.dataset.with_format("arrow")  # the column's values, undecoded

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        source, position = self.source, self.positions[i]
        try:
            value = self.stored[position][source.column][0].as_py()
            data = _stored_bytes(value, source.base_dir)
        except Exception as e:  # an unreadable file: named by the main process
            return int(source.rows[position]), None, reason(e)
        if data is None or not data.startswith(JPEG):
            return super().__getitem__(i)
        return (
            int(source.rows[position]),
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            None,
        )


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


def _stored_bytes(value: Any, base_dir: Path | None) -> bytes | None:
    """A stored image's file bytes: an Image feature's ``{"bytes", "path"}`` or a file path;
    None for anything else (a decoded image: the PIL path takes it)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
        if isinstance(value, str) and is_member(value):  # a webdataset's member, in its shard
            return member_bytes(value)
    if not isinstance(value, str):
        return None
    return _located(value, base_dir).read_bytes()


def _chunk(batch_size: int, workers: int) -> int:
    """Images a worker decodes at once: a batch shared among the workers (a divisor of the
    batch), so that the first batch is ready after batch / workers images, not after a
    whole batch per worker (each worker would otherwise decode a batch of its own)."""
    if workers <= 1:
        return batch_size
    parts = next(p for p in range(workers, batch_size + 1) if batch_size % p == 0)
    return batch_size // parts


def _grouped(chunks: Iterator, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` chunks (the last may hold fewer)."""
    group = []
    for chunk in chunks:
        group.append(chunk)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _side_stream(device: torch.device) -> torch.cuda.Stream | None:
    """A CUDA stream of its own for decoding, so that it overlaps the model's forwards (the
    engine marks each batch used on its stream: ``record_stream``); None off CUDA."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _is_encoded(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and tensor.ndim == 1


def _decode_jpeg(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB of each JPEG, decoded on ``device`` by torchvision; None for one it
    refuses (the batch is decoded whole, and one by one when that fails)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not encoded:
        return []
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    decoded = []
    for data in encoded:
        try:
            decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            decoded.append(None)
    return decoded


def _pil_crop(data: torch.Tensor, transform: ImageTransform) -> tuple[torch.Tensor | None, str]:
    """A JPEG's bytes through the PIL path: (crop, None), or (None, why it cannot be read)."""
    import io

    from PIL import Image

    try:
        image = _to_rgb(Image.open(io.BytesIO(data.numpy().tobytes())))
        return transform.host(image), None
    except Exception as e:  # PIL raises many types for a bad file
        return None, reason(e)


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

"""The decoded cache (``--data-cache DIR``): a range's crops written once, read back mapped.

``DIR/<fingerprint>-<start>-<stop>.npy`` holds the crops of one range of rows (uint8, or the
transform's floats when it does not split), ``...rows.npy`` a BLAKE2b digest of every row.
An entry is complete or absent: it is filled as ``NAME.<host>-<pid>.partial`` (its whole
size reserved first, so a full disk is found before any decoding, never as a bus error),
and renamed into place once every row is in, the digests first. A pass that stops early
(an error, Ctrl-C) removes its partial file; a later pass over the same fingerprint
removes those that a killed process left (same host, process gone).

A read maps the file once per batch and copies the batch out (into pinned memory when the
model is on a GPU), so the resident memory stays one batch however large the file; every
row is checked against its digest on a thread per core (BLAKE2b releases the GIL), and a
damaged entry is removed and refused.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ..files import write_atomic


def digest_threads() -> int:
    """Rows checked at once when read: BLAKE2b runs at about 1 GB/s a core, so a GPU eating
    30,000 crops of 224 px a second (4.5 GB/s) needs several; every core, at most 16."""
    return min(16, os.cpu_count() or 1)


def entry(folder: Path, fingerprint: str, shard: range) -> Path:
    """The cache file of ``shard``; the folder is made, and stale partial files of this
    fingerprint are removed."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"--data-cache {folder} cannot be created ({e.strerror})") from e
    sweep(folder, fingerprint)
    return folder / f"{fingerprint}-{shard.start}-{shard.stop}.npy"


def sweep(folder: Path, fingerprint: str) -> list[Path]:
    """Remove the partial files of ``fingerprint`` that no live process on this host writes
    (and those of earlier versions, which carried no owner); returns what was removed."""
    removed = []
    for partial in folder.glob(f"{fingerprint}-*.npy*.partial"):
        if not _owner_alive(partial):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _owner_alive(partial: Path) -> bool:
    """Whether the process named in ``NAME.npy.<host>-<pid>.partial`` still runs here (a
    file of another host is left alone: its owner cannot be asked)."""
    owner = partial.name.removesuffix(".partial").rpartition(".npy.")[2]
    host, _, pid = owner.rpartition("-")
    if not owner or not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path, count: int, batch_size: int, skip: int, pin: bool) -> CachedBatches | None:
    """The cached crops as a lazy sequence of batches, or None when the entry is unusable
    (absent, of another size, or without its row digests): it is then made again."""
    try:
        shape = np.load(path, mmap_mode="r").shape
        digests = np.load(digests_path(path))
    except (OSError, ValueError):
        return None
    if len(shape) != 4 or shape[0] != count or digests.shape != (count,):
        return None
    return CachedBatches(path, digests, range(skip, count), batch_size, pin)


class CachedBatches:
    """Batches read from a cache file (see the module docstring)."""

    def __init__(
        self, path: Path, digests: np.ndarray, positions: range, batch_size: int, pin: bool
    ):
        self.path, self.digests = path, digests
        self.positions, self.batch_size, self.pin = positions, batch_size, pin

    def __iter__(self) -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(digest_threads()) as pool:
            for start in range(self.positions.start, self.positions.stop, self.batch_size):
                stop = min(start + self.batch_size, self.positions.stop)
                batch = self._copy(start, stop)
                found = np.array(list(pool.map(digest, batch.numpy())), dtype=np.uint64)
                wrong = np.flatnonzero(found != self.digests[start:stop])
                if len(wrong):
                    self._remove()
                    raise DatasetError(
                        f"--data-cache entry {self.path} is damaged (row {start + wrong[0]} "
                        "does not match its digest); it was removed: run again to rebuild it"
                    )
                yield batch

    def _copy(self, start: int, stop: int) -> torch.Tensor:
        mapped = np.load(self.path, mmap_mode="r")
        rows = mapped[start:stop]
        dtype = torch.from_numpy(np.zeros(0, rows.dtype)).dtype
        batch = torch.empty(rows.shape, dtype=dtype, pin_memory=self.pin)
        np.copyto(batch.numpy(), rows)  # one plain copy, out of the mapping
        del mapped, rows
        return batch

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)
        digests_path(self.path).unlink(missing_ok=True)


class CacheWriter:
    """Fills ``NAME.<host>-<pid>.partial`` batch by batch, with a digest of every row; both
    are renamed into place once every row is in (see the module docstring). ``abort``
    removes the partial file; after ``close`` it does nothing."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.partial = path.with_name(f"{path.name}.{_owner()}.partial")
        self.count, self.done = count, 0
        self.file = None
        self.row_bytes = 0  # bytes of one row, known from the first batch
        self.digests = np.zeros(count, dtype=np.uint64)

    def add(self, batch: torch.Tensor) -> None:
        rows = np.ascontiguousarray(batch.cpu().numpy())  # (B, 3, H, W), as the file holds it
        try:
            if self.file is None:
                self._open(rows)
            self.file.write(memoryview(rows).cast("B"))
        except OSError as e:
            self.abort()
            raise self._error(e) from e
        for offset, row in enumerate(rows):
            self.digests[self.done + offset] = digest(row)
        self.done += len(rows)

    def _open(self, rows: np.ndarray) -> None:
        """Create the partial file, write the .npy header, reserve the whole entry."""
        header = {
            "descr": np.lib.format.dtype_to_descr(rows.dtype),
            "fortran_order": False,
            "shape": (self.count, *rows.shape[1:]),
        }
        self.row_bytes = rows[0].nbytes
        self.file = open(self.partial, "wb")  # noqa: SIM115 (closed by close or abort)
        np.lib.format.write_array_header_2_0(self.file, header)
        size = self.file.tell() + self.count * self.row_bytes
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self.file.fileno(), 0, size)

    def close(self) -> None:
        if self.file is None or self.done != self.count:
            self.abort()
            return
        try:
            self.file.close()  # the last writes reach the disk here: ENOSPC may come now
            write_atomic(digests_path(self.path), self._save_digests)
            self.partial.replace(self.path)
        except OSError as e:
            raise self._error(e) from e
        finally:
            self.abort()

    def abort(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.partial.unlink(missing_ok=True)

    def _error(self, e: OSError) -> DatasetError:
        folder = self.path.parent
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            need = self.count * self.row_bytes / 2**20
            return DatasetError(
                f"--data-cache {folder}: no space left on device for {self.path.name} "
                f"({need:.0f} MiB); free space, choose another folder or drop --data-cache"
            )
        return DatasetError(
            f"--data-cache {folder}: {self.partial.name} cannot be written "
            f"({e.strerror or e}); choose another folder or drop --data-cache"
        )

    def _save_digests(self, tmp: Path) -> None:
        with open(tmp, "wb") as file:  # np.save would add .npy to a path
            np.save(file, self.digests)


def digests_path(path: Path) -> Path:
    return path.with_name(path.stem + ".rows.npy")


def digest(row: np.ndarray) -> np.uint64:
    """8 bytes of BLAKE2b over a row's bytes."""
    data = np.ascontiguousarray(row).reshape(-1).view(np.uint8)  # hashed in place, no copy
    return np.frombuffer(hashlib.blake2b(data, digest_size=8).digest(), np.uint64)[0]

"""Atomic writes and file hashes (no torch here: the CLI imports this at start-up)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import ClipsharpError, ConfigError

# the kinds of file that are written into as they are, never replaced (``-o /dev/null``,
# ``-o >(gzip > r.json.gz)``, a FIFO some reader waits on)
STREAMS = {stat.S_IFCHR: "a character device", stat.S_IFIFO: "a FIFO"}
UNWRITABLE = {stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def write_atomic(path: str | Path, write: Callable[[Path], None], *, folder: bool = False) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    An interrupted write leaves either the old file or the new one, never half of one. With
    ``folder``, ``tmp`` is an empty folder that ``write`` fills; it replaces the folder at
    ``path`` (a crash between removing the old folder and renaming the new one leaves none).

    A character device or a FIFO at ``path`` is written into as a stream (``write(path)``),
    never replaced; a block device or a socket is refused. The temporary file is locked
    while it is written; the unlocked ones a killed run left for ``path`` are removed first
    (see :func:`sweep_stale`).
    """
    path = Path(path)
    if not folder and is_stream(path):
        _write_stream(path, write)
        return
    check_writable(path, "cannot write", folder=folder)
    sweep_stale(path)
    tmp, lock = None, -1
    try:
        tmp, lock = _staging(path, folder)  # the file, and a descriptor locking it
        write(tmp)
        if folder:
            honour_umask(tmp, mode=0o777)
            shutil.rmtree(path, ignore_errors=True)  # os.replace does not replace a folder
        else:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            honour_umask(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a full disk (ENOSPC), a quota, a read-only file system
        raise ClipsharpError(
            f"cannot write {path}: {e.strerror or e}; free space or choose another path"
        ) from e
    finally:  # also on Ctrl-C and SIGTERM (see clipsharp.core.outputs.Terminated)
        if tmp is not None:
            _remove(tmp)
            os.close(lock)


def special_file(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``"a FIFO"``), else
    None (also when nothing is there). Symlinks are followed: ``/dev/fd/63`` is a FIFO."""
    try:
        kind = stat.S_IFMT(path.stat().st_mode)
    except (OSError, ValueError):
        return None
    return STREAMS.get(kind) or UNWRITABLE.get(kind)


def is_stream(path: str | Path) -> bool:
    """A character device or a FIFO: written into, never replaced, no journal beside it."""
    return special_file(Path(path)) in STREAMS.values()


def check_writable(path: Path, flag: str, *, folder: bool = False) -> None:
    """Refuse a path that no file can be written to: a folder (unless ``folder``), a block
    device or a socket, or one whose folder is missing."""
    if path.is_dir() and not folder:
        raise ClipsharpError(f"{flag} {path}: it is a folder; give a file name")
    kind = special_file(path)
    if kind in UNWRITABLE.values():
        raise ClipsharpError(
            f"{flag} {path}: it is {kind}, which clipsharp neither writes nor replaces; give a "
            "file name"
        )
    if not path.parent.is_dir():
        raise ClipsharpError(f"{flag} {path}: folder {path.parent} does not exist; create it first")


def _write_stream(path: Path, write: Callable[[Path], None]) -> None:
    """Write into a character device or a FIFO as it is: no temporary file, no rename."""
    try:
        write(path)
    except OSError as e:  # a reader that went away (EPIPE), a full device
        raise ClipsharpError(f"cannot write {path}: {e.strerror or e}; check its reader") from e


def staging_name(path: Path) -> re.Pattern[str]:
    """The names of the temporary files and folders of :func:`write_atomic` for ``path``:
    ``.NAME.XXXXXXXX.tmp``, eight characters as ``tempfile`` draws them."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")


def sweep_stale(path: Path) -> list[Path]:
    """Remove the temporary files and folders a killed run left beside ``path``; return them.

    Only names of :func:`staging_name` for this ``path``, regular files and real folders (no
    symlinks), and only those no live writer locks: a run writing ``path`` now keeps its own.
    """
    import fcntl

    pattern, removed = staging_name(path), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name) or entry.is_symlink():
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            continue
        _remove(Path(entry.path))
        os.close(fd)
        removed.append(Path(entry.path))
    return removed


def _staging(path: Path, folder: bool) -> tuple[Path, int]:
    """An empty temporary file (or folder) beside ``path``, and a descriptor locking it."""
    import fcntl

    prefix = f".{path.name}."
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        fd = os.open(tmp, os.O_RDONLY)
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        tmp = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:  # Ctrl-C or SIGTERM before the caller holds it
        os.close(fd)
        _remove(tmp)
        raise
    return tmp, fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def honour_umask(path: str | Path, mode: int = 0o666) -> None:
    """Give ``path`` the mode a plain ``open`` (``mkdir`` with ``mode=0o777``) would:
    ``mode & ~umask``.

    ``tempfile.mkstemp`` creates files readable by their owner alone (0600); a report or a
    checkpoint renamed from one would stay unreadable to the group.
    """
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def journal_path(output: Path) -> Path:
    """The ``--resume`` journal of a run writing ``output`` (under torchrun, the journal
    adds the rank)."""
    return output.with_name(output.name + ".partial")


def check_outputs(
    outputs: Iterable[tuple[str, str | Path | None]],
    inputs: Iterable[tuple[str, str | Path | None]],
) -> None:
    """Refuse, before any work, an output that is, or lies inside, something the run reads.

    Args:
        outputs: ``(flag, path)`` of each file or folder the run writes (``("-o", "r.json")``);
            None and ``-`` (stdout) are skipped.
        inputs: ``(what, path)`` of each file or folder the run reads
            (``("the --ood folder", "data/shifted")``); paths that do not exist are skipped.

    Symlinks are resolved and hard links compared (same device and inode), so another
    name for an input is caught too. Two outputs may not be one file either.

    Example:
        >>> check_outputs([("-o", "zs.safetensors")], [("the checkpoint", "zs.safetensors")])
        Traceback (most recent call last):
        ConfigError: -o zs.safetensors is also an input, the checkpoint zs.safetensors; ...
    """
    written = [
        (flag, Path(path)) for flag, path in outputs if path is not None and str(path) != "-"
    ]
    read = [(what, Path(path)) for what, path in inputs if path is not None and str(path) != "-"]
    for i, (flag, output) in enumerate(written):
        others = [(f"the {other} path", path) for other, path in written[:i]]
        for what, given in [*read, *others]:
            relation = _overlap(output, given) or (
                _same_path(output, given) if (what, given) in others else None
            )
            if relation:
                kind = "an output" if (what, given) in others else "an input"
                raise ConfigError(
                    f"{flag} {output} {relation} {kind}, {what} {given}; "
                    f"choose a path for {flag} outside the run's inputs and outputs"
                )


def _overlap(output: Path, given: Path) -> str | None:
    """``"is also"`` when ``output`` is ``given``, ``"lies inside"`` when within it, else None."""
    try:
        given_stat = given.stat()
    except (OSError, ValueError):  # nothing there, so nothing to destroy
        return None
    target = output.expanduser().resolve()
    for place in (target, *target.parents):
        try:
            same = _same(place.stat(), given_stat)
        except (OSError, ValueError):
            continue
        if same:
            return "is also" if place == target else "lies inside"
    return None


def _same_path(output: Path, other: Path) -> str | None:
    """``"is also"`` when two outputs, not written yet, are one path."""
    return "is also" if output.expanduser().resolve() == other.expanduser().resolve() else None


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# bytes a run may add to an output's name for the files it writes beside it: write_atomic's
# .NAME.XXXXXXXX.tmp (14), the journal NAME.partial (8) with its .rankR under torchrun and
# its own staging file (29 in all), prune's .NAME.pending (9)
DERIVED_NAMES = 32


def check_name_lengths(outputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse, before any work, an output whose name leaves no room for the names derived
    from it (:data:`DERIVED_NAMES`) under the file system's limit (NAME_MAX, 255 bytes on
    most): such a run would fail only once it wrote its journal."""
    for flag, given in outputs:
        if given is None or str(given) == "-":
            continue
        path = Path(given)
        try:
            limit = os.pathconf(path.parent, "PC_NAME_MAX")
        except (OSError, ValueError):  # no such folder (refused elsewhere) or no limit known
            limit = 255
        size = len(os.fsencode(path.name))
        if size + DERIVED_NAMES > limit:
            raise ConfigError(
                f"{flag} {path.name[:24]}...: the name is {size} bytes, and the files "
                f"written beside it add up to {DERIVED_NAMES} more, past this file system's "
                f"limit of {limit}; give a name of at most {limit - DERIVED_NAMES} bytes"
            )

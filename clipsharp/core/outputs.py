"""What a run writes, checked before any work and written safely: the report path, the
outputs that must not be inputs, the journal beside the report, and signals held while files
that belong together are written. The library's :func:`analysis.run` and every command use
these (no torch here: the CLI imports this at start-up)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import ClipsharpError
from ..files import check_name_lengths, check_outputs, check_writable, is_stream, journal_path
from ..options import RunOptions

HUB_CONFIG = "open_clip_config.json"  # the architecture open_clip keeps beside its weights

Paths = Sequence[tuple[str, "str | Path | None"]]  # (flag or what, path), None: not given


def check_output(output: str | None, flag: str = "-o") -> Path | None:
    """Refuse, before any work, a report path that cannot be written.

    Returns the report path, or None when the report goes to stdout. Whether it is
    also an input is :func:`check_paths`'s job.
    """
    if output is None or output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ClipsharpError(f"{flag} {output} is a folder; give a file name")
    check_writable(path, flag)
    if is_stream(path):  # written into as it is (see clipsharp.files.write_atomic)
        if not os.access(path, os.W_OK):
            raise ClipsharpError(f"{flag} {output} is not writable")
        return path
    if not path.parent.is_dir():
        raise ClipsharpError(
            f"{flag} {output}: folder {path.parent} does not exist; create it first"
        )
    if not os.access(path.parent, os.W_OK):
        raise ClipsharpError(f"{flag} {output}: folder {path.parent} is not writable")
    return path


def check_folder(folder: Path, flag: str) -> None:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        raise ClipsharpError(f"{flag} {folder} is a file, not a folder; choose a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ClipsharpError(
            f"{flag} {folder}: {existing} is not writable; choose a folder you can write to"
        )


def check_paths(outputs: Paths, inputs: Paths) -> None:
    """Refuse an output that is, or lies inside, an input of the run, or whose name leaves no
    room for the files written beside it; a report's ``--resume`` journal (never beside a
    stream) counts as an output (see :func:`clipsharp.files.check_outputs`)."""
    check_name_lengths(outputs)
    journals = [
        (f"the journal of {flag}", journal_path(Path(path)))
        for flag, path in outputs
        if flag == "-o" and path not in (None, "-") and not is_stream(path)
    ]
    check_outputs([*outputs, *journals], inputs)


def check_report(
    output: str | Path | None, resume: bool, reads: Paths, outputs: Paths = ()
) -> Path | None:
    """Before any work: the report path ``output`` can be written, ``--resume`` has a journal
    to keep, and no output (``-o``, ``outputs``) is one of ``reads``. Returns the journal
    (None when the report goes to stdout)."""
    journal = check_resume(resume, check_output(None if output is None else str(output)))
    check_paths([("-o", output), *outputs], reads)
    return journal


def checkpoint_inputs(checkpoints: Mapping[str, str | Path | None]) -> list:
    """``(what, path)`` of each checkpoint by role, and the open_clip_config.json beside it."""
    found = []
    for role, path in checkpoints.items():
        if path is None:
            continue
        what = f"the {role.replace('_', '-')} checkpoint"
        found += [(what, path), (f"the architecture of {what}", Path(path).parent / HUB_CONFIG)]
    return found


def dataset_inputs(flag: str, specs: Sequence[str]) -> list:
    """``(what, path)`` of the local files and folders behind ``--id`` / ``--ood`` specs.

    A spec is ``SOURCE[:SPLIT]``: both readings are taken, as either may be the path;
    a glob stands for the folder before its first wildcard.
    """
    from ..data.specs import GLOB_CHARS, local_path

    found = []
    for text in specs:
        for source in {text, text.rsplit(":", 1)[0]}:
            path = local_path(source)
            if GLOB_CHARS.search(source):
                kept = list(_until_glob(path.parts))
                path = Path(*kept) if kept else Path(".")
            found.append((f"the {flag} dataset", path))
    return found


def _until_glob(parts: Sequence[str]) -> Iterator[str]:
    from ..data.specs import GLOB_CHARS

    for part in parts:
        if GLOB_CHARS.search(part):
            return
        yield part


def run_files(ids: Sequence[str], oods: Sequence[str], model: str | None, run: RunOptions) -> list:
    """``(what, path)`` of every file and folder the shared options make a run read: the
    ``--id`` and ``--ood`` specs, the files the options name, the ``--model`` config."""
    from ..data.imagenet import LISTS
    from ..options import TEMPLATE_SETS

    def file(value: str | None, named: tuple[str, ...]) -> str | None:
        return None if value in named else value

    return [
        *dataset_inputs("--id", ids),
        *dataset_inputs("--ood", oods),
        ("the --classnames file", file(run.data.classnames, LISTS)),
        ("the --templates file", file(run.eval.templates, TEMPLATE_SETS)),
        ("the --head-classnames file", file(run.eval.head_classnames, LISTS)),
        ("the --model config", model),
    ]


def check_resume(resume: bool, output: Path | None) -> Path | None:
    """The journal file of a run written to ``output`` (None when the report goes to stdout,
    a character device or a FIFO)."""
    from ..files import special_file

    if resume and output is None:
        raise ClipsharpError("--resume needs -o FILE: the journal of the run sits beside it")
    if output is not None and is_stream(output):
        if resume:
            raise ClipsharpError(
                f"--resume needs -o FILE, a regular file: -o {output} is "
                f"{special_file(output)}, beside which no journal is kept"
            )
        return None
    return journal_path(output) if output else None


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise them (:class:`Terminated` for
    SIGTERM): files written together are all written."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame):
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    live = [sig for sig in caught if previous[sig] is not signal.SIG_IGN]
    if signal.SIGTERM in live:
        raise Terminated
    if live:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI runners and ``timeout`` send), raised where Ctrl-C would be: the same
    clean-up runs (temporary files removed, the ``--resume`` journal kept); exit 143."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

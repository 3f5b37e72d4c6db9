"""What one ``--id`` / ``--ood`` argument names: ``SOURCE[:SPLIT]``, a role, a display name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..options import InputOptions

ROLES = ("id", "ood")


@dataclass(frozen=True)
class DatasetSpec:
    """One ``--id`` / ``--ood`` argument."""

    source: str  # path, glob or hub name
    split: str | None  # None: choose automatically
    role: str  # "id" or "ood"
    text: str  # the spec as the user wrote it, e.g. "data/shifted:test"

    @classmethod
    def parse(cls, text: str, role: str) -> DatasetSpec:
        """Split ``SOURCE[:SPLIT]`` at the last ':', unless only the whole text is a local path.

        Example:
            >>> DatasetSpec.parse("timm/mini-imagenet:test", "ood").split
            'test'
        """
        if role not in ROLES:
            raise DatasetError(f"dataset role {role!r} is unknown; choose one of id, ood")
        source, split = text, None
        if ":" in text:
            head, tail = text.rsplit(":", 1)
            if local_path(head).exists() or not local_path(text).exists():
                source, split = head, tail
        if not source.strip():
            raise DatasetError(f"dataset spec {text!r} has no source; write SOURCE[:SPLIT]")
        if split is not None and not split.strip():
            raise DatasetError(f"dataset spec {text!r} names no split after ':'; drop the ':'")
        return cls(source=source, split=split, role=role, text=text)


def display_name(spec: DatasetSpec) -> str:
    """Folder name, file stem, glob's folder or hub repository: 'data/shifted:test' -> 'shifted'."""
    source = spec.source.rstrip("/") or "/"
    if GLOB_CHARS.search(source):
        parts = Path(source).parts
        fixed = parts[: next(i for i, part in enumerate(parts) if GLOB_CHARS.search(part))]
        return local_path(str(Path(*fixed))).resolve().name if fixed else Path.cwd().name
    path = local_path(source).resolve() if is_local(source) else Path(source)
    return (path.stem if path.suffix[1:].lower() in FILE_BUILDERS else path.name) or source


def unique_names(specs: list[DatasetSpec]) -> list[str]:
    """Display names, one per spec, unique among them.

    Specs sharing a display name add their explicit split (``shifted:test``); names still
    repeated get ``-2``, ``-3``... in order.
    """
    bases = [display_name(spec) for spec in specs]
    names = [
        f"{base}:{spec.split}" if spec.split and bases.count(base) > 1 else base
        for base, spec in zip(bases, specs, strict=True)
    ]
    taken: set[str] = set()
    for i, name in enumerate(names):
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}-{n}", n + 1
        names[i] = candidate
        taken.add(candidate)
    return names


FILE_BUILDERS = dict(parquet="parquet", arrow="arrow", json="json", jsonl="json", csv="csv")


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


GLOB_CHARS = re.compile(r"[*?\[]")


def local_path(source: str) -> Path:
    return Path(source).expanduser()


def is_local(source: str) -> bool:
    """Whether a missing source is reported missing rather than tried on the hub."""
    if source.startswith((".", "/", "~")) or not HUB_NAME.fullmatch(source):
        return True
    return local_path(source).exists() or local_path(Path(source).parts[0]).exists()


def dataset_specs(inputs: InputOptions) -> tuple[DatasetSpec, ...]:
    """The specs of --id, then of each --ood, in order."""
    found = [DatasetSpec.parse(inputs.id, role="id")] if inputs.id else []
    return tuple(found + [DatasetSpec.parse(text, role="ood") for text in inputs.ood])

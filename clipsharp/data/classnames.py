"""The class names a dataset is read with, and why (see docs/imagenet.md).

A dataset names its classes (ClassLabel names, image-folder names, label strings); these
become the prompts' class names as they are, or, where they are ImageNet's (wnids, synset
lemma lists), CLIP's curated ImageNet names. ``--classnames`` gives them instead: a FILE, or
a named list (``imagenet``, ``imagenet-a``, ``imagenet-r``). Names that do not fit the
dataset's classes are refused, never matched by position alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from . import imagenet

SHOWN = 50  # a report lists every class name up to this many, else the first FIRST
FIRST = 10


@dataclass(frozen=True)
class ClassNames:
    """The class names of a dataset's labels, where they came from, and their ImageNet
    identity when they have one."""

    names: list[str]  # one per label value: the prompts' class names
    source: str  # how they were chosen, as the report says ("imagenet (wnid folders)")
    imagenet: tuple[int, ...] | None = None  # each class's standard ImageNet-1k index

    def describe(self) -> dict:
        """The report's record of the names: the source, a digest, all or the first few."""
        digest = hashlib.sha256(json.dumps(self.names).encode()).hexdigest()[:16]
        shown = self.names if len(self.names) <= SHOWN else self.names[:FIRST]
        return {"class_names": self.source, "classes": shown, "classes_digest": digest}


def is_list(option: str | Path | None) -> bool:
    """Whether ``--classnames`` names a list (``imagenet``...) rather than a file."""
    return str(option) in imagenet.LISTS if option is not None else False


def read_classnames(path: str | Path) -> list[str]:
    """Class names from a named list, or from a file: one per line (blank lines skipped), or
    a JSON list of strings."""
    if is_list(path):
        return [imagenet.clip_names()[i] for i in imagenet.indices(str(path))]
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"--classnames {path} cannot be read ({e}); give a UTF-8 file") from e
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"--classnames {path} is not valid JSON ({e})") from e
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise DatasetError(f"--classnames {path} must be a JSON list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"--classnames {path} holds no class names; write one per line")
    repeated = [name for name in names if names.count(name) > 1]
    if repeated:
        raise DatasetError(f"--classnames {path} repeats {repeated[0]!r}; names must be unique")
    return names


def named_classes(names: list[str], option: str | Path | None, what: str) -> ClassNames:
    """The class names of a dataset whose classes are named ``names`` (label value i is
    ``names[i]``): ImageNet's where they are, else as given, or from ``--classnames``.

    ``what`` the names are, as the source says: ``folders``, ``ClassLabel names``,
    ``label values``.
    """
    if option is None:
        return _own(names, what)
    if is_list(option):
        return _listed(names, str(option), what)
    return _from_file(names, Path(option), what)


def indexed_classes(option: str | Path) -> ClassNames:
    """Integer labels without names: label value i is name i of ``--classnames``."""
    if is_list(option):
        kept = imagenet.indices(str(option))
        return ClassNames(
            [imagenet.clip_names()[i] for i in kept], f"{option} (label indices)", kept
        )
    return ClassNames(read_classnames(option), f"--classnames {option} (label indices)")


def _own(names: list[str], what: str) -> ClassNames:
    """The dataset's own names, or CLIP's ImageNet names when they are ImageNet's."""
    if imagenet.all_wnids(names):
        return _imagenet([imagenet.wnids().index(n) for n in names], f"imagenet (wnid {what})")
    if any("," in name for name in names):
        positions = imagenet.lemma_positions(names)
        if positions is not None:
            return _imagenet(positions, "imagenet (synset lemma lists)")
    return ClassNames(
        list(names), "dataset (folder names)" if what == "folders" else f"dataset ({what})"
    )


def _listed(names: list[str], listed: str, what: str) -> ClassNames:
    """``--classnames imagenet`` (or -a, -r): each class found by wnid, by index in the
    list (ImageNetV2's folders 0 ... 999), by CLIP name or by lemma list."""
    kept = imagenet.indices(listed)
    by_key = {imagenet.wnids()[i]: i for i in kept}
    by_key |= {str(k): i for k, i in enumerate(kept)}
    by_key |= {imagenet.clip_names()[i]: i for i in kept}
    found = [by_key.get(name) for name in names]
    if None in found:
        lemmas = imagenet.lemma_positions(names) if any("," in n for n in names) else None
        found = lemmas if lemmas and set(lemmas) <= set(kept) else found
    unknown = [name for name, i in zip(names, found, strict=True) if i is None]
    if unknown:
        few = ", ".join(repr(name) for name in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        verb = "is" if len(unknown) == 1 else "are"
        raise DatasetError(
            f"{len(unknown)} of its {len(names)} class {what} ({few}{more}) {verb} not in "
            f"--classnames {listed} (as a wnid, an index 0-{len(kept) - 1} or a class name); "
            "is it the right list?"
        )
    digits = all(name.isdigit() for name in names)
    form = "wnid" if imagenet.all_wnids(names) else "integer" if digits else "named"
    return _imagenet(found, f"{listed} (--classnames {listed}, {form} {what})")


def _from_file(names: list[str], path: Path, what: str) -> ClassNames:
    """A file's names for a dataset's classes: by index (integer names), by name (names
    the dataset's classes already have), or one per class, in the dataset's order."""
    given = read_classnames(path)
    source = f"--classnames {path}"
    if all(n.isdigit() for n in names) and all(int(n) < len(given) for n in names):
        return ClassNames([given[int(n)] for n in names], f"{source} (by index)")
    if set(names) <= set(given):
        return ClassNames(list(names), f"{source} (by name)")
    if len(given) != len(names):
        raise DatasetError(
            f"--classnames {path} lists {len(given)} names but the dataset has "
            f"{len(names)} classes ({_few(names)}); give one name per class, in the "
            f"dataset's order, or names that match its {what}"
        )
    return ClassNames(given, f"{source} (in the dataset's class order)")


def _imagenet(positions: list[int], source: str) -> ClassNames:
    repeated = sorted({i for i in positions if positions.count(i) > 1})
    if repeated:
        raise DatasetError(
            f"two classes are both ImageNet's {imagenet.wnids()[repeated[0]]} "
            f"({imagenet.clip_names()[repeated[0]]}); give each class once"
        )
    names = [imagenet.clip_names()[i] for i in positions]
    return ClassNames(names, source, tuple(positions))


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

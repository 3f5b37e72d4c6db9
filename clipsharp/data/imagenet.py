"""ImageNet-1k's classes as the installed packages ship them (see docs/imagenet.md).

The 1000 wnids in their standard order and their WordNet lemma lists come from ``timm``
(``timm.data.ImageNetInfo``), the 200-class subsets of ImageNet-A and ImageNet-R from the
synset lists timm ships beside them, CLIP's curated class names from
``open_clip.zero_shot_metadata``. Nothing here is typed by hand.
"""

from __future__ import annotations

import functools
import re

from ..errors import DatasetError

LISTS = ("imagenet", "imagenet-a", "imagenet-r")  # the names --classnames accepts for a list
WNID = re.compile(r"n\d{8}")


@functools.cache
def wnids() -> tuple[str, ...]:
    """The 1000 wnids of ImageNet-1k in the standard order (``n01440764`` first)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.cache
def clip_names() -> tuple[str, ...]:
    """CLIP's curated class names, one per standard index (``tench``, ``goldfish``, ...)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


@functools.cache
def lemmas() -> tuple[str, ...]:
    """The WordNet lemma list of each class (``tench, Tinca tinca``), as the hub names them."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_descriptions())


@functools.cache
def indices(name: str) -> tuple[int, ...]:
    """The standard indices of a named list's classes, in its order: all 1000 for
    ``imagenet``, the 200 of ``imagenet-a`` / ``imagenet-r``."""
    if name == "imagenet":
        return tuple(range(1000))
    import pkgutil

    text = pkgutil.get_data("timm.data", f"_info/{name.replace('-', '_')}_synsets.txt")
    position = {wnid: i for i, wnid in enumerate(wnids())}
    return tuple(position[wnid] for wnid in text.decode().split())


def all_wnids(names: list[str]) -> bool:
    """Whether every name is an ImageNet-1k wnid."""
    return all(WNID.fullmatch(name) for name in names) and set(names) <= set(wnids())


def lemma_positions(names: list[str]) -> list[int] | None:
    """The standard index of each name that is a full lemma list, or None when one is not.

    A lemma list shared by two classes (``crane``: the bird and the machine) is placed by
    the order of the names around it (ImageNet-derived class lists keep the standard order),
    or by a number after it (``crane2``: the second); a place the order leaves open is
    refused, never guessed.
    """
    places: dict[str, list[int]] = {}
    for i, lemma in enumerate(lemmas()):
        places.setdefault(_plain(lemma), []).append(i)
    candidates = [_candidates(name, places) for name in names]
    if not all(candidates):
        return None
    if all(len(c) == 1 for c in candidates):
        return [c[0] for c in candidates]
    first, last = _in_order(candidates), _in_order(candidates[::-1], reverse=True)
    if first is not None and first == (last or [])[::-1]:
        return first
    open_name = next(n for n, c in zip(names, candidates, strict=True) if len(c) > 1)
    raise DatasetError(
        f"class {open_name!r} may be either of ImageNet's "
        f"{' and '.join(wnids()[i] for i in places[_plain(open_name)])}; give the class "
        "names with --classnames (imagenet, or a FILE)"
    )


def _plain(name: str) -> str:
    return " ".join(name.split()).casefold()


def _candidates(name: str, places: dict[str, list[int]]) -> list[int]:
    found = places.get(_plain(name), [])
    numbered = re.fullmatch(r"(.*?)(\d+)", _plain(name))
    if not found and numbered and len(places.get(numbered[1], [])) > 1:
        shared = places[numbered[1]]
        number = int(numbered[2])
        return [shared[number - 1]] if 1 <= number <= len(shared) else []
    return found


def _in_order(candidates: list[list[int]], reverse: bool = False) -> list[int] | None:
    """The earliest increasing choice (latest decreasing with ``reverse``), or None."""
    chosen, bound = [], 1000 if reverse else -1
    for options in candidates:
        fits = [i for i in options if (i < bound if reverse else i > bound)]
        if not fits:
            return None
        bound = max(fits) if reverse else min(fits)
        chosen.append(bound)
    return chosen

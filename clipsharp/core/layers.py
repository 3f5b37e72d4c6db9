"""Layer groups of a CLIP state_dict.

``block`` granularity names the parts of an open_clip ViT CLIP as the paper
does: ``visual.embed``, ``visual.block.{i}``, ``visual.head``, ``text.embed``,
``text.block.{i}``, ``text.head``, ``logit_scale``, ``head``. Other towers
(ResNet, timm, HF text) fall back to one rule: the module path up to its first
integer index, else the top-level module. ``module`` granularity groups the
tensors of one leaf module (a weight with its bias; norm statistics); ``tensor``
takes each tensor alone. Every key belongs
to exactly one group, and groups are made from the keys there are: an
image-tower-only checkpoint (no ``transformer.*``) has no ``text.block.*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..options import GRANULARITIES

# (pattern on the key, group name template) for the open_clip ViT image tower ...
_VIT_IMAGE_RULES = [
    (r"^visual\.(conv1|class_embedding|positional_embedding|ln_pre)\b", "visual.embed"),
    (r"^visual\.transformer\.resblocks\.(\d+)\.", "visual.block.{0}"),
    (r"^visual\.(ln_post|proj|attn_pool|attn_pool_contrastive|ln_pool)\b", "visual.head"),
]
# ... and for the open_clip text transformer, the scales and a stored head (any image tower).
_COMMON_RULES = [
    (r"^(token_embedding|positional_embedding)\b", "text.embed"),
    (r"^transformer\.resblocks\.(\d+)\.", "text.block.{0}"),
    (r"^(ln_final|text_projection)\b", "text.head"),
    (r"^(logit_scale|logit_bias)$", "logit_scale"),
    (r"^head\.", "head"),
]
# Tensor names that belong to a leaf module (Linear, LayerNorm, BatchNorm, attention):
# `module` granularity groups them by that module; any other tensor is a group alone.
_MODULE_TENSORS = {
    "weight", "bias", "running_mean", "running_var", "num_batches_tracked",
    "in_proj_weight", "in_proj_bias",
}  # a table, aligned to read by column  # fmt: skip
_VIT = [(re.compile(p), name) for p, name in _VIT_IMAGE_RULES + _COMMON_RULES]
_OTHER = [(re.compile(p), name) for p, name in _COMMON_RULES]


def is_vit(keys: Iterable[str]) -> bool:
    """True for an open_clip ViT image tower (``visual.transformer.resblocks.*``)."""
    return any(key.startswith("visual.transformer.resblocks.") for key in keys)


def block_of(key: str, vit: bool = True) -> str:
    """The block-granularity group of one state_dict key (``vit``: a ViT image tower)."""
    for pattern, name in _VIT if vit else _OTHER:
        match = pattern.search(key)
        if match:
            return name.format(*match.groups())
    return _generic_block(key)


def _generic_block(key: str) -> str:
    """Module path up to the first integer index, else the top-level module (of its tower)."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    tower = 1 if parts[0] in ("visual", "text") and len(parts) > 2 else 0
    return ".".join(parts[: tower + 1])


def group_of(key: str, granularity: str = "block", vit: bool = True) -> str:
    if granularity == "block":
        return block_of(key, vit)
    if granularity == "module":
        module, _, name = key.rpartition(".")
        return module if module and name in _MODULE_TENSORS else key
    if granularity == "tensor":
        return key
    raise ValueError(f"unknown granularity {granularity!r}; choose one of {GRANULARITIES}")


def layer_groups(keys: Iterable[str], granularity: str = "block") -> dict[str, list[str]]:
    """Group keys: ``{group: [keys...]}``, image tower first, then text, then the rest.

    Within a tower: input embedding, blocks by index, output head; other groups keep
    the order in which they first appear.
    """
    keys = list(keys)
    vit = is_vit(keys)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(group_of(key, granularity, vit), []).append(key)
    order = {name: i for i, name in enumerate(groups)}
    return {name: groups[name] for name in sorted(groups, key=lambda g: _rank(g, order[g]))}


_TOWER_ORDER = {"image": 0, "text": 1, "other": 2}


def _rank(group: str, appearance: int) -> tuple[int, int, int]:
    """Sort key: tower, then embed < blocks (by index) < head, then first appearance."""
    tower = _TOWER_ORDER[tower_of(group)]
    if group.endswith(".embed"):
        return (tower, 0, 0)
    block = re.search(r"\.block\.(\d+)$", group)
    if block:
        return (tower, 1, int(block.group(1)))
    if group in ("visual.head", "text.head"):
        return (tower, 3, 0)
    return (tower, 2, appearance)


def tower_of(group: str) -> str:
    """``image``, ``text`` or ``other`` (scales and stored heads)."""
    if group.startswith("visual"):
        return "image"
    if group in ("logit_scale", "head") or group.startswith("head."):
        return "other"
    return "text"


def select_layers(names: Iterable[str], spec: str | None) -> list[str]:
    """The layer names matching ``spec``: a comma list of names or globs (``visual.block.*``).

    ``None`` selects every layer. A pattern that matches nothing is an error listing
    the valid names, in their order.
    """
    from fnmatch import fnmatchcase

    from ..errors import ConfigError

    names = list(names)
    if spec is None:
        return names
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    if not patterns:
        raise ConfigError("--layers is empty; give layer names or globs, e.g. 'visual.block.*'")
    chosen = set()
    for pattern in patterns:
        matched = [name for name in names if fnmatchcase(name, pattern)]
        if not matched:
            raise ConfigError(
                f"--layers {pattern!r} matches no layer; valid names: {', '.join(names)}"
            )
        chosen.update(matched)
    return [name for name in names if name in chosen]

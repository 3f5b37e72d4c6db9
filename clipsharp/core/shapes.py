"""A standard ViT CLIP's open_clip config, read from the shapes of its state_dict.

Read as OpenAI's ``build_model`` reads it: the image tower's width and patch size from
the patch convolution (``visual.conv1.weight``: width x 3 x patch x patch), its layers by
counting blocks, its image size from the positional embedding's grid (grid² + 1 class
token positions, grid x patch pixels), the MLP ratio from the first block's ``c_fc``, the
embedding dimension from ``visual.proj`` (width x embed); the text tower's vocabulary and
width from ``token_embedding.weight``, its context length from ``positional_embedding``,
its layers by counting blocks. Heads are width / 64 and the activation GELU (QuickGELU
when asked): shapes cannot show either, so both are recorded as assumed.

An image-tower-only checkpoint (no ``transformer.*``) gives only the text fields its
leftovers show; its config holds a placeholder text tower of one block, which the
working model drops as soon as it is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoint import has_text_tower

HEAD_WIDTH = 64  # the width of one attention head in every OpenAI CLIP
# The text config of an image-tower-only checkpoint: open_clip cannot build a CLIP without a
# text tower, so one of one block is built and dropped at once (models.drop_absent_text).
PLACEHOLDER_TEXT = {"layers": 1, "heads": 1}


@dataclass(frozen=True)
class ReadConfig:
    """An open_clip model config read from tensor shapes, and what it rests on."""

    model_cfg: dict[str, Any] = field(hash=False)  # buildable by open_clip's CLIP
    read: dict[str, int | float] = field(hash=False)  # "vision.width" -> 768, ... (from shapes)
    assumed: dict[str, str] = field(hash=False)  # "vision.heads" -> "width / 64 = 12", ...

    @property
    def text_fields(self) -> list[str] | None:
        """The text config fields the shapes fix, or None when the text tower is whole."""
        if "text.layers" in self.read:
            return None
        return [name.removeprefix("text.") for name in self.read if name.startswith("text.")]

    def describe(self) -> dict[str, Any]:
        return {"read": dict(self.read), "assumed": dict(self.assumed)}


def read_config(tensors: Mapping[str, torch.Tensor], *, quick_gelu: bool = False):
    """The :class:`ReadConfig` of a state_dict's shapes, and the list of what could not be
    read (empty when the config is whole). Only shapes are looked at: meta tensors do."""
    unread: list[str] = []
    vision = _vision(tensors, unread)
    text = _text(tensors, unread)
    proj = tensors.get("visual.proj")
    read: dict[str, int | float] = {}
    if proj is not None and proj.ndim == 2:
        read["embed_dim"] = proj.shape[1]
    elif vision:
        unread.append("the embedding dimension (no 2-D visual.proj)")
    read |= {f"vision.{k}": v for k, v in vision.items()}
    read |= {f"text.{k}": v for k, v in text.items()}
    if unread:
        return None, unread
    assumed = _assumed(vision, text, quick_gelu)
    text_cfg = PLACEHOLDER_TEXT | text  # image-tower-only: a text tower to build and drop
    if text.get("layers"):
        text_cfg["heads"] = text["width"] // HEAD_WIDTH
    model_cfg = {
        "embed_dim": read["embed_dim"],
        "quick_gelu": quick_gelu,
        "vision_cfg": vision | {"head_width": HEAD_WIDTH},
        "text_cfg": text_cfg,
    }
    return ReadConfig(model_cfg, read, assumed), []


def _vision(tensors: Mapping[str, torch.Tensor], unread: list[str]) -> dict[str, int | float]:
    keys = list(tensors)
    if not any(k.startswith("visual.") for k in keys):
        unread.append("the image tower (no visual.* keys)")
        return {}
    if any(k.startswith("visual.trunk.") for k in keys):
        unread.append("the image tower: a timm model (visual.trunk.*), not a ViT CLIP")
        return {}
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in keys):
        unread.append("the image tower: a ResNet (visual.layer1.*), not a ViT")
        return {}
    conv = tensors.get("visual.conv1.weight")
    if conv is None or conv.ndim != 4:
        unread.append("the vision width and patch size (no 4-D visual.conv1.weight)")
        return {}
    width, patch = conv.shape[0], conv.shape[-1]
    found: dict[str, int | float] = {"width": width, "patch_size": patch}
    found |= _blocks(tensors, "visual.transformer.resblocks.", width, "vision", unread)
    grid = _grid(tensors.get("visual.positional_embedding"))
    if grid is None:
        unread.append(
            "the image size (visual.positional_embedding is not a square grid plus a class token)"
        )
    else:
        found["image_size"] = grid * patch
    return found


def _grid(positional: torch.Tensor | None) -> int | None:
    """The side of the patch grid: positions = grid² + 1 (the class token)."""
    if positional is None or positional.ndim != 2:
        return None
    side = math.isqrt(positional.shape[0] - 1)
    return side if side > 0 and side * side + 1 == positional.shape[0] else None


def _text(tensors: Mapping[str, torch.Tensor], unread: list[str]) -> dict[str, int | float]:
    if any(k.startswith("text.") for k in tensors):
        unread.append("the text tower: text.* (a custom or HuggingFace text tower)")
        return {}
    found: dict[str, int | float] = {}
    tokens, positional = tensors.get("token_embedding.weight"), tensors.get("positional_embedding")
    norm = tensors.get("ln_final.weight")
    if tokens is not None and tokens.ndim == 2:
        found |= {"vocab_size": tokens.shape[0], "width": tokens.shape[1]}
    elif norm is not None:
        found["width"] = norm.shape[0]
    if positional is not None and positional.ndim == 2:
        found["context_length"] = positional.shape[0]
    if not has_text_tower(tensors):
        return found  # image-tower-only: the leftovers' fields, no blocks
    for name, value in (("vocabulary", "vocab_size"), ("context length", "context_length")):
        if value not in found:
            unread.append(f"the text {name} (no token_embedding.weight or positional_embedding)")
    if "width" in found:
        found |= _blocks(tensors, "transformer.resblocks.", found["width"], "text", unread)
    return found


def _blocks(
    tensors: Mapping[str, torch.Tensor], prefix: str, width: int, tower: str, unread: list[str]
) -> dict[str, int | float]:
    """Layers (blocks counted), MLP ratio (the first block's c_fc rows / width), and
    whether heads of 64 fit the width."""
    indices = {key[len(prefix) :].split(".", 1)[0] for key in tensors if key.startswith(prefix)}
    layers = sum(1 for i in indices if i.isdigit())
    if not layers:
        unread.append(f"the {tower} layers (no {prefix}N.* keys)")
        return {}
    found: dict[str, int | float] = {"layers": layers}
    fc = tensors.get(f"{prefix}0.mlp.c_fc.weight")
    if fc is None or fc.ndim != 2:
        unread.append(f"the {tower} MLP ratio (no 2-D {prefix}0.mlp.c_fc.weight)")
    else:
        found["mlp_ratio"] = fc.shape[0] / width
    if width % HEAD_WIDTH:
        unread.append(f"the {tower} heads (width {width} is not a multiple of {HEAD_WIDTH})")
    return found


def _assumed(vision: dict, text: dict, quick_gelu: bool) -> dict[str, str]:
    assumed = {"vision.heads": f"width / {HEAD_WIDTH} = {vision['width'] // HEAD_WIDTH}"}
    if text.get("layers"):
        assumed["text.heads"] = f"width / {HEAD_WIDTH} = {text['width'] // HEAD_WIDTH}"
    else:
        assumed["text"] = "absent (image-tower-only): a placeholder of one block, dropped"
    assumed["activation"] = "QuickGELU" if quick_gelu else "GELU"
    return assumed

"""The layouts robust fine-tuning code saves CLIP in, recognised from the keys, read onto
open_clip's keys and the stored head (``head.weight`` / ``head.bias``).

Every layout holds an OpenAI-layout CLIP (the keys open_clip's ViT CLIP has too) under a
prefix, and maybe a ``ClassificationHead`` (a ``Linear`` whose weights are
``logit_scale.exp()`` x normalised class embeddings). The family's code keeps the text
transformer only in OpenAI's archive; the others delete it (``keep_lang=False``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


@dataclass(frozen=True)
class Layout:
    """Where a layout keeps the CLIP model's keys and its classification head's."""

    name: str  # as convert and inspect report it
    model: str  # the prefix of the CLIP model's keys ("" at the top level)
    head: str | None = None  # the prefix of the classification head's keys, None: no head
    # OpenAI's weights (and the family fine-tuned from them) use QuickGELU, which no shape
    # shows: an architecture read from the shapes of such a file takes it
    quick_gelu: bool = False


WISE_FT = Layout(
    "WiSE-FT ImageClassifier pickle", "image_encoder.model.", "classification_head.", True
)
MODEL_SOUPS = Layout("model soups ModelWrapper state_dict", "model.", "classification_head.", True)
TASK_VECTORS = Layout("task vectors ImageEncoder", "model.", quick_gelu=True)
OPENAI = Layout("OpenAI TorchScript archive", "", quick_gelu=True)
OPEN_CLIP_TRAINING = Layout("open_clip training checkpoint", "")  # {"epoch", "state_dict"}
OPEN_CLIP = Layout("open_clip state_dict", "")

# OpenAI's archives carry these beside the weights: numbers the model was built with
# (open_clip's build_model_from_openai_state_dict drops them too), and a computed mask
OPENAI_NUMBERS = ("input_resolution", "context_length", "vocab_size")
DERIVED_KEYS = (*OPENAI_NUMBERS, "attn_mask")


def recognise(keys: Collection[str], top_level: Collection[str] = ()) -> Layout:
    """The layout of a state_dict's ``keys`` (after a ``module.`` prefix is stripped);
    ``top_level``: the keys of the mapping it was found in, when it was under a wrapper."""
    for layout in (WISE_FT, MODEL_SOUPS, TASK_VECTORS):
        prefixes = (layout.model, layout.head) if layout.head else (layout.model,)
        has_head = layout.head is None or f"{layout.head}weight" in keys
        if has_head and all(key.startswith(prefixes) for key in keys):
            return layout
    if all(key in keys for key in OPENAI_NUMBERS):
        return OPENAI
    if {"epoch", "state_dict"} <= set(top_level):
        return OPEN_CLIP_TRAINING
    return OPEN_CLIP


def to_open_clip(tensors: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """The layout's tensors under open_clip's keys, its head as ``head.weight`` /
    ``head.bias``, the numbers and masks of :data:`DERIVED_KEYS` dropped."""
    mapped = {}
    for key, tensor in tensors.items():
        if layout.head and key.startswith(layout.head):
            mapped["head." + key.removeprefix(layout.head)] = tensor
            continue
        name = key.removeprefix(layout.model)
        if name not in DERIVED_KEYS:
            mapped[name] = tensor
    return mapped


def check_normalized(attributes: Mapping[str, Any], head: str | None, source: Path) -> None:
    """Refuse a head that classifies unnormalised features.

    clipsharp's stored heads classify normalised image features (``features @ W.T + b``
    with ``features`` of unit norm), as WiSE-FT's ``ClassificationHead(normalize=True)``
    and model soups' ``ModelWrapper(normalize=True)`` do. A module pickle records the flag
    (on the head, or on the wrapper); a state_dict does not, and is read as its family
    builds it (model soups: ``normalize=True``). ``head``: the head's key prefix (None:
    no head; "": the head is the module itself).
    """
    if head is None:
        return
    flags = [f"{head}normalize", "normalize"]
    found = next((flag for flag in flags if flag in attributes), None)
    if found is not None and attributes[found] is not True:
        raise CheckpointError(
            f"{source}: its classification head has {found}={attributes[found]!r}, it "
            "classifies unnormalised image features; clipsharp's stored heads classify "
            "normalised ones: rebuild the head with normalize=True"
        )


def check_head(head: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], where):
    """Refuse a head of other than (C, D) weights and (C,) biases, D the embedding size."""
    weight, bias = head["head.weight"], head["head.bias"]
    embed = tensors["visual.proj"].shape[-1] if "visual.proj" in tensors else weight.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != embed or bias.shape != weight.shape[:1]:
        raise CheckpointError(
            f"{where}: a head of weights {tuple(weight.shape)} and biases {tuple(bias.shape)} "
            f"does not fit image features of {embed} dimensions; is it this model's head?"
        )

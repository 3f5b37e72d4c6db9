"""Prefix cache for layer-wise work: reuse the activations below the moving layer (DESIGN §6).

When one layer group moves and everything below it holds the background
weights, the activations entering that layer are the same at every alpha.
For an open_clip ViT image tower they are cached once per stage:

    stage 0          the images (no cache: a full forward)
    stage k + 1      tokens after the embedding and k blocks (the input of block k)
    stage L + 1      tokens after all L blocks (the input of visual.head)
    stage L + 2      the normalised image features (for text, scale and head layers)

Evaluating from stage s runs only what lies above it, with the same operations
as ``encode_image``: the metrics are bit-identical to a full forward. Caches are
built at the background weights, only for this rank's shard, one stage at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F

from .data import EvalData
from .evaluate import batch_slices
from .models import ClipClassifier

BUDGET_BYTES = 4 << 30  # caches larger than this (all datasets together) are not built
_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.")
_HEAD = re.compile(r"^visual\.(ln_post|proj)\b")


def vit_depth(classifier: ClipClassifier) -> int | None:
    """L, the number of blocks of a plain open_clip ViT image tower; None for any other tower."""
    visual = classifier.model.visual
    needed = ("_embeds", "_pool", "transformer", "proj")
    if not all(hasattr(visual, name) for name in needed):
        return None
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "output_tokens", False):
        return None
    return len(visual.transformer.resblocks)


def stage_of(keys: Sequence[str], depth: int) -> int:
    """The latest stage whose activations do not depend on ``keys``."""
    stages = []
    for key in keys:
        block = _BLOCK.match(key)
        if block:
            stages.append(int(block.group(1)) + 1)
        elif _HEAD.match(key):
            stages.append(depth + 1)
        elif key.startswith("visual."):
            stages.append(0)  # the embedding, or a part of the tower this map does not know
        else:
            stages.append(depth + 2)  # text tower, scales, stored head: image features are fixed
    return min(stages)


def run_from(classifier: ClipClassifier, x: torch.Tensor, stage: int, depth: int) -> torch.Tensor:
    """Normalised image features (B, D) from activations ``x`` at ``stage`` (>= 1)."""
    if stage == depth + 2:
        return x
    visual = classifier.model.visual
    x = _blocks(visual, x, stage - 1, depth)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return F.normalize(pooled, dim=-1)


def _blocks(visual, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Blocks ``first`` .. ``last - 1`` as ``Transformer.forward`` runs them."""
    transformer = visual.transformer
    if not transformer.batch_first:
        x = x.transpose(0, 1).contiguous()
    for block in transformer.resblocks[first:last]:
        x = block(x, attn_mask=None)
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    return x


class PrefixCache:
    """Cached activations of every dataset at one stage, advanced as the moving layer rises."""

    def __init__(self, classifier: ClipClassifier, datasets: Sequence[EvalData], batch_size: int):
        self.classifier, self.batch_size = classifier, batch_size
        self.depth = vit_depth(classifier)
        self.datasets = list(datasets)
        self.stage, self.cached = 0, self.datasets

    @property
    def usable(self) -> bool:
        return self.depth is not None and self._estimate() <= BUDGET_BYTES

    def _estimate(self) -> int:
        visual = self.classifier.model.visual
        tokens = visual.positional_embedding.shape[0]
        width = visual.positional_embedding.shape[-1]
        size = torch.finfo(self.classifier.dtype).bits // 8
        return sum(d.num_examples for d in self.datasets) * tokens * width * size

    def at(self, stage: int) -> list[EvalData]:
        """The datasets as activations at ``stage``, computed at the current (background) weights.

        Must be called while the weights below ``stage`` hold the background.
        """
        if stage < self.stage:
            self.stage, self.cached = 0, self.datasets
        if stage > self.stage:
            self.cached = [self._advance(d, stage) for d in self.cached]
            self.stage = stage
        return self.cached

    @torch.inference_mode()
    def _advance(self, data: EvalData, stage: int) -> EvalData:
        """``data`` at ``stage``: only this rank's shard is computed (the only part it reads)."""
        out = None
        for part in batch_slices(data.num_examples, self.batch_size):
            x = data.images[part].to(self.classifier.device, self.classifier.dtype)
            x = self._forward(x, stage)
            if out is None:
                shape = (data.num_examples, *x.shape[1:])
                out = torch.zeros(shape, dtype=x.dtype, device=x.device)
            out[part] = x
        return replace(data, images=data.images[:0] if out is None else out)

    @contextmanager
    def encoding_from(self, stage: int) -> Iterator[None]:
        """While open, the classifier encodes images given as activations at ``stage``."""
        if stage == 0:
            yield
            return
        self.classifier.encoder = lambda x: run_from(self.classifier, x, stage, self.depth)
        try:
            yield
        finally:
            self.classifier.encoder = None

    def _forward(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """From activations at ``self.stage`` to ``stage``."""
        visual, depth = self.classifier.model.visual, self.depth
        if self.stage == 0:
            x = visual._embeds(x)
        first = max(self.stage, 1) - 1
        x = _blocks(visual, x, first, min(stage, depth + 1) - 1)
        if stage == depth + 2:
            pooled, _ = visual._pool(x)
            x = F.normalize(pooled @ visual.proj if visual.proj is not None else pooled, dim=-1)
        return x

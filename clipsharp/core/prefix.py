"""Prefix cache for layer-wise work: reuse the activations below the moving layer
(docs/architecture.md, the engine's contract).

When one layer group moves and everything below it holds the background
weights, the activations entering that layer are the same at every alpha.
For an open_clip ViT image tower they are cached per block of images, at one
stage at a time, advanced as the engine goes through the block's points in
order of stage:

    stage 0          the images (no cache: a full forward)
    stage k + 1      tokens after the embedding and k blocks (the input of block k)
    stage L + 1      tokens after all L blocks (the input of visual.head)
    stage L + 2      the normalised image features (for text, scale and head layers)

Evaluating from stage s runs only what lies above it, with the same operations
as ``encode_image``: the metrics are bit-identical to a full forward. A block's
cache is built at the background weights and holds one stage of one block: its
memory is bounded by the block, never by the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .models import ClipClassifier

if TYPE_CHECKING:
    from ..data.load import EvalData

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


class BlockPrefix:
    """One block's activations at one stage, advanced as the points of the block rise.

    ``at(stage)`` must be called while the weights below ``stage`` hold the background.
    """

    def __init__(
        self, classifier: ClipClassifier, depth: int, data: EvalData, batches: Sequence
    ) -> None:
        self.classifier, self.depth = classifier, depth
        self.data, self.batches = data, batches  # host batches, finished on demand
        self.stage, self.cached = 0, None

    @torch.inference_mode()
    def at(self, stage: int) -> list[torch.Tensor]:
        """The block's activations at ``stage`` (>= 1), one tensor per batch."""
        if stage < self.stage or self.cached is None:
            classifier = self.classifier
            finish = self.data.images.transform.finish
            self.stage = 0
            self.cached = [
                self._forward(finish(b, classifier.device, classifier.dtype), stage)
                for b in self.batches
            ]
        elif stage > self.stage:
            self.cached = [self._forward(x, stage) for x in self.cached]
        self.stage = stage
        return self.cached

    def features(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Normalised image features (B, D) from this block's activations at ``stage``."""
        return run_from(self.classifier, x, stage, self.depth)

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

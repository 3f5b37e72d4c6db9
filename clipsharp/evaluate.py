"""THE evaluation loop: (classifier, head, data) -> accuracy, loss, counts.

Paths, layer-wise paths, sharpness and pruning all call :func:`evaluate`.
Each rank evaluates its own shard of the examples; the sums of correct
predictions, losses and counts are all-reduced, so a distributed run gives
the single-process numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed
from .data import EvalData
from .models import ClipClassifier, ZeroShotHeads


@dataclass(frozen=True)
class Metrics:
    """Totals over a dataset; accuracy and loss are derived from them."""

    correct: int  # examples whose arg-max logit is the label
    loss_sum: float  # sum of per-example cross-entropy, in nats
    count: int  # examples evaluated

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def loss(self) -> float:
        """Mean cross-entropy, in nats."""
        return self.loss_sum / self.count

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "loss": self.loss, "num_examples": self.count}


def batch_slices(
    num_examples: int, batch_size: int, *, rank: int | None = None, world_size: int | None = None
) -> Iterator[slice]:
    """The batches of this rank's shard of ``num_examples``, in order."""
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    part = distributed.shard(num_examples, rank, world_size)
    for start in range(part.start, part.stop, batch_size):
        yield slice(start, min(start + batch_size, part.stop))


def batches(
    data: EvalData, batch_size: int, *, rank: int | None = None, world_size: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, 3, H, W), labels (B,)) over this rank's shard of ``data``, in order."""
    for part in batch_slices(data.num_examples, batch_size, rank=rank, world_size=world_size):
        yield data.images[part], data.labels[part]


def evaluate(
    classifier: ClipClassifier,
    heads: ZeroShotHeads,
    data: EvalData,
    batch_size: int,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> Metrics:
    """Accuracy and mean cross-entropy of the classifier's current weights on ``data``.

    ``rank`` / ``world_size`` default to the process group's; pass them to
    evaluate one shard by hand (the totals are then that shard's alone).
    """
    head = heads.get(data.classnames)
    totals = torch.zeros(3, dtype=torch.float64, device=classifier.device)  # correct, loss, count
    with torch.inference_mode():
        for images, labels in batches(data, batch_size, rank=rank, world_size=world_size):
            labels = labels.to(classifier.device)
            logits = classifier.logits(images, head)  # (B, C) fp32
            totals[0] += (logits.argmax(dim=-1) == labels).sum()
            totals[1] += F.cross_entropy(logits, labels, reduction="sum").double()
            totals[2] += labels.numel()
    if rank is None and world_size is None:
        totals = distributed.all_reduce_sum(totals)
    correct, loss_sum, count = totals.tolist()
    return Metrics(correct=int(correct), loss_sum=loss_sum, count=int(count))


def loss_gradient(
    classifier: ClipClassifier,
    heads: ZeroShotHeads,
    data: EvalData,
    batch_size: int,
    keys: list[str],
) -> tuple[Metrics, dict[str, torch.Tensor]]:
    """Metrics of the current weights and the gradient of the mean cross-entropy.

    Returns ``(metrics, {key: d loss / d tensor})`` over every rank's examples, the
    gradients in fp32 on the classifier's device. For worst-case sharpness; the
    zero-shot head is held fixed (no gradient flows into the text tower).
    """
    parameters = dict(classifier.model.named_parameters())
    if classifier.head is not None:
        parameters |= {"head.weight": classifier.head.weight, "head.bias": classifier.head.bias}
    inputs = [parameters[key] for key in keys]
    head = heads.get(data.classnames)
    head = None if head is None else head.clone()  # a normal tensor: autograd may save it
    grads = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in inputs]
    totals = torch.zeros(3, dtype=torch.float64, device=classifier.device)
    frozen = [p for p in inputs if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        _accumulate(classifier, head, data, batch_size, inputs, grads, totals)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    totals = distributed.all_reduce_sum(totals)
    count = totals[2].item()
    gradients = {
        key: distributed.all_reduce_sum(grad) / count for key, grad in zip(keys, grads, strict=True)
    }
    correct, loss_sum, count = totals.tolist()
    return Metrics(int(correct), loss_sum, int(count)), gradients


def _accumulate(classifier, head, data, batch_size, inputs, grads, totals) -> None:
    """Add this rank's sums: loss gradients into ``grads``; correct, loss, count into ``totals``."""
    with torch.enable_grad():
        for images, labels in batches(data, batch_size):
            labels = labels.to(classifier.device)
            logits = classifier.logits(images, head)  # (B, C) fp32
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
            for total, grad in zip(grads, torch.autograd.grad(loss_sum, inputs), strict=True):
                total += grad.float()
            totals[0] += (logits.detach().argmax(dim=-1) == labels).sum()
            totals[1] += loss_sum.detach().double()
            totals[2] += labels.numel()

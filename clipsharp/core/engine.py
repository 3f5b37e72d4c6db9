"""The engine: every point of an analysis on each block of images, one pass over the data.

An analysis is a list of :class:`Point` s — how to write the working model (an alpha on
the path, a layer group at alpha, a noise draw at alpha), the first prefix stage that
differs from the shared background — plus a summary of their metrics. Zero-shot heads
are cached for a whole run by the identity of the text-tower weights
(``Workspace.restoring`` clears them at its start and end), which no point declares: a
point whose write moves a text-tower tensor gets one of its own, derived from that write
(``ZeroShotHeads.text_state``), the same at every block.

The engine streams each dataset once, in blocks of whole batches (decoded in DataLoader
workers), and on each block evaluates every point before it moves on: write the point in
place, forward (from the block's cached prefix where the point allows), add the sums,
undo. The next block is decoded meanwhile, on a thread (``feed.py``); a block moves to the
device once (from pinned memory, without waiting, on a GPU), and on an accelerator it is
also normalised once, not per point. Memory is bounded by two blocks, never by the
dataset.

Sums (correct, loss, count per point and dataset, fp64) are journalled at block
boundaries, so ``--resume`` continues a killed run from its last finished block with the
same sums in the same order: the same report, bit for bit. Under torchrun each rank
streams its own shard and keeps its own journal; the sums are all-reduced at the end.

Cost per block: for each point, the weights it writes (a lerp, a noise draw) plus the
forwards of the block from its stage. Noise draws are regenerated from ``(seed, k)`` when
needed (see ``sharpness.NoiseBank``), heads are encoded once per distinct text-tower
weights and kept for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.load import EvalData
from ..errors import ConfigError
from ..options import auto_prefetch
from ..progress import Event, Progress, Where
from ..reports.metrics import Metrics
from . import distributed
from .feed import Prefetch, host_blocks
from .journal import Journal
from .models import ClipClassifier, ZeroShotHeads
from .prefix import BlockPrefix, vit_depth

BLOCK_BYTES = 128 << 20  # images (and prefix activations) of the blocks held, unless --block-images


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Point:
    """One state of the working model that the datasets are evaluated at.

    ``write`` puts the point into the working model, starting from the background (the
    state every point's ``undo`` leaves behind); ``stage`` > 0 promises that the point
    leaves every weight below that prefix stage at the background (see ``prefix.py``).
    """

    key: str  # unique within the analysis: the journal's name for it
    write: Callable[[], None]  # write the point's weights in place
    undo: Callable[[], None] = _nothing  # back to the background (exactly, by copy or lerp)
    stage: int = 0  # prefix stage the forward starts from; 0: the images
    where: Where | None = None  # where it lies (alpha, layer, rho, draw), for progress


Metric = dict[str, dict[str, Metrics]]  # point key -> dataset name -> metrics


@dataclass
class Engine:
    """Evaluates points over datasets for one run; see the module docstring.

    ``block_images`` is the number of images of a block (a multiple of ``batch_size``);
    None chooses it from ``BLOCK_BYTES``. ``prefetch_blocks`` blocks are decoded ahead of
    the one evaluated (None: ``auto_prefetch`` for the device). ``finish_blocks``:
    normalise a block once into the working dtype, on the device, rather than each batch
    at each point (None: on an accelerator, where the finished block, 2 to 4 times the
    uint8 one, is device memory; on the CPU the memory is the host's, and finishing a
    batch of 32 crops of 224 px takes 0.03 s against 8 s for its ViT-B-32 forward).
    """

    classifier: ClipClassifier
    heads: ZeroShotHeads
    datasets: Sequence[EvalData]
    batch_size: int
    block_images: int | None = None
    journal: Journal | None = None
    progress: Progress | None = None
    rank: int | None = None  # evaluate this shard alone (with world_size), not all-reduced
    world_size: int | None = None
    prefetch_blocks: int | None = None
    finish_blocks: bool | None = None
    memo: dict = field(default_factory=dict)  # a shard that fits one block, kept (see _blocks)

    def evaluate(
        self,
        points: Sequence[Point],
        *,
        name: str | None = "points",
        datasets: Sequence[EvalData] | None = None,
        label: str = "",
    ) -> Metric:
        """Metrics of every point on every dataset (all of them, or ``datasets``).

        ``name`` identifies this pass in the journal: a resumed run continues it from the
        last recorded block (None: a pass that is not journalled). ``label`` is what the
        progress display shows.
        """
        datasets = list(self.datasets if datasets is None else datasets)
        keys = [p.key for p in points]
        if len(set(keys)) != len(keys):
            raise ValueError(f"points of pass {name!r} repeat a key")
        sums = torch.zeros(len(points), len(datasets), 3, dtype=torch.float64)
        done = self._resume(name, keys, datasets, sums)
        sums = sums.to(self.classifier.device)
        written = object()  # this pass: a point's text weights are named (written, its key)
        depth = vit_depth(self.classifier) if any(p.stage for p in points) else None
        order = sorted(range(len(points)), key=lambda i: points[i].stage if depth else 0)
        block = self._block_size(datasets, depth is not None)
        shards = [len(self._shard(d)) for d in datasets]
        ticker = _Ticker(
            self.progress, label or name or "evaluate", datasets, shards, done, len(points)
        )
        for index, data in enumerate(datasets):
            shard = self._shard(data)
            twin = _twin(datasets, index)
            if twin is not None:  # the same images, labels and classes: the same sums
                sums[:, index] = sums[:, twin]
                continue
            for batches, labels in self._blocks(data, shard, done[index], block):
                prefix = BlockPrefix(self.classifier, depth, data, batches) if depth else None
                for i in order:
                    stage = points[i].stage if prefix else 0
                    sums[i, index] += self._point(
                        points[i], (written, points[i].key), data, batches, labels, prefix, stage
                    )
                    ticker.tick(sum(len(b) for b in batches), points[i].where)
                done[index] += sum(len(b) for b in batches)
                if self.journal is not None and name is not None:
                    self.journal.save_pass(name, keys, _names(datasets), done, sums.tolist())
        if self.rank is None:
            sums = distributed.all_reduce_sum(sums)
        totals = sums.tolist()
        return {
            point.key: {
                data.name: Metrics(int(c), loss, int(n))
                for data, (c, loss, n) in zip(datasets, totals[i], strict=True)
            }
            for i, point in enumerate(points)
        }

    def _point(
        self, point: Point, written_as, data, batches, labels, prefix, stage: int
    ) -> torch.Tensor:
        """(3,) fp64 sums of correct, loss and count of ``point`` on one block; ``written_as``
        names its text weights, when its write moves any (``ZeroShotHeads.text_state``)."""
        inputs = prefix.at(stage) if stage else None  # at the background: before the write
        totals = torch.zeros(3, dtype=torch.float64, device=self.classifier.device)
        point.write()
        try:
            head, targets = self.heads.for_data(data, written_as, progress=self.progress)
            with torch.inference_mode():
                for b, (images, y) in enumerate(zip(batches, labels, strict=True)):
                    if stage:
                        features = prefix.features(inputs[b], stage)
                    else:
                        features = self.classifier.features(self._finish(data, images))
                    logits = self.classifier.classify(features, head)  # (B, C) fp32
                    y = y if targets is None else targets[y]  # the label's column
                    loss_sum = F.cross_entropy(logits, y, reduction="sum")
                    _add(totals, logits, y, loss_sum)
        finally:
            point.undo()
        return totals

    def steps(self, label: str, total: int) -> Callable[[], None] | None:
        """A callback counting ``total`` steps of ``label`` on the progress display."""
        if self.progress is None:
            return None
        done = [0]

        def step() -> None:
            done[0] += 1
            self.progress(Event(label, done[0], total, unit="steps"))

        return step

    def _finish(self, data: EvalData, images: torch.Tensor) -> torch.Tensor:
        return data.images.transform.finish(images, self.classifier.device, self.classifier.dtype)

    def batches(self, data: EvalData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(model inputs (B, 3, H, W), labels (B,)) of this rank's shard, on the device."""
        block = self._block_size([data], prefix=False)
        for batches, labels in self._blocks(data, self._shard(data), 0, block):
            for images, y in zip(batches, labels, strict=True):
                yield self._finish(data, images), y

    def _blocks(self, data: EvalData, shard: range, skip: int, block: int):
        """Lists of batches holding at most ``block`` images, and their labels, on the device.

        A block's uint8 crops move to the device once (the points then finish them there,
        or ``finish_blocks`` finishes them once); the next block is decoded meanwhile. A
        shard that fits in one block is kept in ``memo``: the workspace's memo lives as
        long as the workspace, so the runs on one workspace (prune's before and after, a
        library loop over analyses) decode a small dataset once.
        """
        key = (data.fingerprint, shard.start, shard.stop, self.batch_size)
        if key in self.memo and not skip and len(shard) <= block:
            yield self.memo[key]
            return
        device = self.classifier.device
        labels = data.labels[shard.start + skip : shard.stop].to(device)
        stream = data.images.batches(shard, self.batch_size, skip=skip, pin=device.type == "cuda")
        for host in Prefetch(host_blocks(stream, block), self._prefetch()):
            moved = [self._moved(data, images) for images in host]
            pair = moved, _split(labels, moved)
            labels = labels[sum(len(b) for b in moved) :]
            if not skip and len(shard) <= block:
                self.memo[key] = pair
            yield pair

    def _moved(self, data: EvalData, images: torch.Tensor) -> torch.Tensor:
        """A host batch on the device, contiguous; finished there with ``finish_blocks``.

        A batch decoded on the GPU (``--decode cuda``) was made on the decoder's stream: it
        is marked used on this one, so its memory is not reused while the model reads it.
        """
        if images.is_cuda:
            images.record_stream(torch.cuda.current_stream(images.device))
        images = images.to(self.classifier.device, non_blocking=True).contiguous()
        finish = self.finish_blocks
        if finish or (finish is None and self.classifier.device.type != "cpu"):
            return self._finish(data, images)
        return images

    def _shard(self, data: EvalData) -> range:
        rank = distributed.rank() if self.rank is None else self.rank
        world_size = distributed.world_size() if self.world_size is None else self.world_size
        return distributed.shard(data.num_examples, rank, world_size)

    def _prefetch(self) -> int:
        if self.prefetch_blocks is not None:
            return self.prefetch_blocks
        return auto_prefetch(gpu=self.classifier.device.type != "cpu")

    def _block_size(self, datasets: Sequence[EvalData], prefix: bool) -> int:
        """Images per block: ``block_images``, or whole batches of what fits in
        ``BLOCK_BYTES`` shared by the blocks held (the one evaluated, those prefetched)."""
        if self.block_images is not None:
            images = self.block_images
        else:
            per_image = max(_bytes_per_image(self.classifier, d, prefix) for d in datasets)
            images = BLOCK_BYTES // per_image // (1 + self._prefetch())
        return max(self.batch_size, images // self.batch_size * self.batch_size)

    def _resume(self, name: str, keys, datasets, sums: torch.Tensor) -> list[int]:
        """Images done per dataset, and their sums, from the journal (zeros without one)."""
        done = [0] * len(datasets)
        stored = self.journal.get_pass(name) if self.journal and name is not None else None
        if stored is None:
            return done
        if stored["points"] != keys or stored["datasets"] != _names(datasets):
            raise ConfigError(
                f"--resume: {self.journal.path} records other points for {name!r}; "
                "rerun without --resume to start afresh"
            )
        sums.copy_(torch.tensor(stored["sums"], dtype=torch.float64))
        return list(stored["done"])


def _add(totals: torch.Tensor, logits, labels: torch.Tensor, loss_sum) -> None:
    """Add a batch into (3,) fp64 ``totals``: correct predictions, summed loss, count
    (in place, on the device: no copy to or from the host per batch)."""
    totals[0] += (logits.argmax(dim=-1) == labels).sum()
    totals[1] += loss_sum.detach().double()
    totals[2] += labels.numel()


def _split(labels: torch.Tensor, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.split(labels[: sum(len(b) for b in batches)], [len(b) for b in batches]))


def _names(datasets: Sequence[EvalData]) -> list[str]:
    return [d.name for d in datasets]


def _twin(datasets: Sequence[EvalData], index: int) -> int | None:
    """An earlier dataset with the same fingerprint (images, labels, class names), if any."""
    fingerprint = datasets[index].fingerprint
    return next((i for i in range(index) if datasets[i].fingerprint == fingerprint), None)


def _bytes_per_image(classifier: ClipClassifier, data: EvalData, prefix: bool) -> int:
    """The host crop (uint8 when the transform splits) plus one stage of prefix activations."""
    size = classifier.model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    crop = 3 * height * width * (1 if data.images.transform.before is not None else 4)
    if not prefix:
        return crop
    tokens, channels = classifier.model.visual.positional_embedding.shape[-2:]
    return crop + tokens * channels * (torch.finfo(classifier.dtype).bits // 8)


class _Ticker:
    """Reports ``label``'s progress in images evaluated (images x points), and the point."""

    def __init__(self, progress, label: str, datasets, shards, done, points: int) -> None:
        self.progress, self.label = progress, label
        own = [i for i in range(len(datasets)) if _twin(datasets, i) is None]
        self.total = sum(shards[i] for i in own) * points
        self.done = sum(done[i] for i in own) * points
        if progress:
            progress(Event(label, self.done, self.total))

    def tick(self, images: int, point: Where | None = None) -> None:
        self.done += images
        if self.progress:
            self.progress(Event(self.label, self.done, self.total, point=point))


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

    One point (the weights as they are) through the engine. ``rank`` / ``world_size``
    default to the process group's; pass them to evaluate one shard by hand (the totals
    are then that shard's alone).
    """
    engine = Engine(classifier, heads, [data], batch_size, rank=rank, world_size=world_size)
    heads.invalidate()  # the head of the weights as they are now
    return engine.evaluate([Point("current", _nothing)])["current"][data.name]


def loss_gradient(
    engine: Engine, data: EvalData, keys: Sequence[str]
) -> tuple[Metrics, dict[str, torch.Tensor]]:
    """Metrics of the current weights and the gradient of the mean cross-entropy.

    Streams this rank's shard once. Returns ``(metrics, {key: d loss / d tensor})`` over
    every rank's examples, the gradients in fp32 on the classifier's device. For worst-case
    sharpness; the zero-shot head (of the text weights as they are) is held fixed: no
    gradient flows into the text tower.
    """
    classifier = engine.classifier
    parameters = dict(classifier.model.named_parameters())
    if classifier.head is not None:
        parameters |= {"head.weight": classifier.head.weight, "head.bias": classifier.head.bias}
    inputs = [parameters[key] for key in keys]
    head, targets = engine.heads.for_data(data)
    head = None if head is None else head.clone()  # a normal tensor: autograd may save it
    grads = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in inputs]
    totals = torch.zeros(3, dtype=torch.float64, device=classifier.device)
    frozen = [p for p in inputs if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            for images, labels in engine.batches(data):
                logits = classifier.classify(classifier.features(images), head)  # (B, C) fp32
                labels = labels if targets is None else targets[labels]
                loss_sum = F.cross_entropy(logits, labels, reduction="sum")
                for total, grad in zip(grads, torch.autograd.grad(loss_sum, inputs), strict=True):
                    total += grad.float()
                _add(totals, logits.detach(), labels, loss_sum)
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

"""The engine's feed: blocks of decoded batches, the next one decoded while this one is used.

A block is a list of whole batches (see ``engine.py``). :class:`Prefetch` iterates the
blocks on a thread of its own, ``depth`` blocks ahead of the engine: with depth 1 the next
block is decoded (by the DataLoader workers, or by that thread itself without workers)
while every point is evaluated on the current one, and no more than two blocks are held
(the one in use and the one being made). The blocks and their order are those of a plain
loop: the same batches, the same sums.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
_END = object()  # the producer's last word: the blocks are over


def host_blocks(batches: Iterator[torch.Tensor], block: int) -> Iterator[list[torch.Tensor]]:
    """``batches`` grouped into lists of ``block`` images (the last one may hold fewer);
    closing this closes ``batches`` at once (a data-cache writer then removes its file)."""
    group, count = [], 0
    try:
        for batch in batches:
            group.append(batch)
            count += len(batch)
            if count >= block:
                yield group
                group, count = [], 0
        if group:
            yield group
    finally:
        _close(batches)


def _close(items) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


class Prefetch:
    """Iterate ``items`` on a thread, at most ``depth`` items ahead of the consumer.

    The producer takes a slot before it makes an item; the consumer gives the slot of an
    item back when it asks for the next one (it is done with it), so at most ``depth + 1``
    items exist at once. An error of the producer is raised in the consumer. Closing early
    (an error, Ctrl-C, ``break``) stops the producer and waits for it, which closes
    ``items`` on its own thread (so a data-cache writer removes its partial file).
    ``depth`` 0: no thread, ``items`` as they are.
    """

    def __init__(self, items: Iterator[T], depth: int) -> None:
        self.items, self.depth = items, depth
        self.slots = threading.Semaphore(depth + 1)
        self.ready: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[T]:
        if self.depth == 0:
            yield from self.items
            return
        self.thread = threading.Thread(target=self._produce, name="clipsharp-feed", daemon=True)
        self.thread.start()
        try:
            while True:
                item = self.ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
                self.slots.release()  # the consumer is done with this item
        finally:
            self._stop()

    def _produce(self) -> None:
        try:
            while True:
                self.slots.acquire()
                if self.stopped.is_set():
                    return
                item = next(self.items, _END)
                self.ready.put(item)
                if item is _END:
                    return
        except BaseException as e:  # raised again in the consumer, whatever it is
            self.ready.put(_Failure(e))
        finally:
            _close(self.items)

    def _stop(self) -> None:
        self.stopped.set()
        self.slots.release()  # a producer waiting for a slot wakes, sees the stop, ends
        if self.thread is not None:
            self.thread.join()


class _Failure:
    """An exception of the producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

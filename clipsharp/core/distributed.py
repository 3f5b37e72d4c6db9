"""torch.distributed helpers: rank, world size, shards, all-reduce of sums.

Without an initialised process group everything degrades to one process:
rank 0 of a world of size 1, and all-reduce is the identity.
"""

from __future__ import annotations

import os

import torch


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if _initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def is_main() -> bool:
    """True on the process that writes reports and prints: rank 0, read from torchrun's
    ``RANK`` until the process group is joined (progress starts before it is)."""
    return rank() == 0 if _initialized() else int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: torch.device) -> None:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)


def shard(num_examples: int, rank: int, world_size: int) -> range:
    """This rank's contiguous slice: every example in exactly one shard, no padding."""
    start = num_examples * rank // world_size
    stop = num_examples * (rank + 1) // world_size
    return range(start, stop)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor of totals over all ranks (the identity in a single process)."""
    if world_size() > 1:
        values = values.clone()
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
    return values

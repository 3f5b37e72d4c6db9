"""Sharded evaluation: every example exactly once, totals equal to one process."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import run_options, workspace

from clipsharp.analyses.interpolate import run_interpolation
from clipsharp.analyses.layerwise import run_layerwise
from clipsharp.analyses.sharpness import run_sharpness
from clipsharp.core.distributed import shard
from clipsharp.core.engine import evaluate
from clipsharp.options import LayerwiseOptions, SharpnessOptions

SHARPNESS = SharpnessOptions(rhos=(0.3,), iterations=2)
OPTIONS = run_options(batch_size=4)


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 30])
def test_shards_cover_every_example_once(world_size):
    covered = [i for rank in range(world_size) for i in shard(20, rank, world_size)]
    assert covered == list(range(20))


def open_pair(pair):
    """A workspace of the pair on the ID and the OOD set."""
    return workspace(pair, OPTIONS, datasets=[(pair.in_dist, "id"), (pair.shifted, "ood")])


def test_shard_totals_add_up_to_the_whole(pair):
    ws = open_pair(pair)
    data = ws.datasets[1]
    whole = evaluate(ws.classifier, ws.heads, data, batch_size=4)
    parts = [evaluate(ws.classifier, ws.heads, data, 4, rank=r, world_size=3) for r in range(3)]
    assert sum(p.count for p in parts) == whole.count == data.num_examples
    assert sum(p.correct for p in parts) == whole.correct
    assert sum(p.loss_sum for p in parts) == pytest.approx(whole.loss_sum, rel=1e-6)


def _worker(rank: int, world_size: int, port: int, pair, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        workspace = open_pair(pair)
        docs = {
            "interpolate": run_interpolation(workspace, OPTIONS).to_dict(),
            "layerwise": run_layerwise(workspace, OPTIONS, LayerwiseOptions()).to_dict(),
            "sharpness": run_sharpness(workspace, OPTIONS, SHARPNESS).to_dict(),
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(docs, f)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(ours: dict, theirs: dict) -> None:
    for name, metrics in theirs.items():
        assert ours[name]["accuracy"] == metrics["accuracy"]
        assert ours[name]["num_examples"] == metrics["num_examples"]
        assert ours[name]["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


@pytest.mark.slow  # two processes, each opening the pair and running three analyses
def test_two_gloo_ranks_equal_one_process(pair, tmp_path):
    workspace = open_pair(pair)
    single = run_interpolation(workspace, OPTIONS).to_dict()
    layers = run_layerwise(workspace, OPTIONS, LayerwiseOptions()).to_dict()  # prefix cache on
    sharp = run_sharpness(workspace, OPTIONS, SHARPNESS).to_dict()
    mp.spawn(_worker, args=(2, _free_port(), pair, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        docs = json.loads((tmp_path / f"rank{rank}.json").read_text())
        doc = docs["interpolate"]
        assert doc["config"]["world_size"] == 2
        for ours, theirs in zip(doc["results"]["path"], single["results"]["path"], strict=True):
            _same(ours["metrics"], theirs["metrics"])
        rows = zip(docs["layerwise"]["results"]["layers"], layers["results"]["layers"], strict=True)
        for ours, theirs in rows:
            for mine, single_point in zip(
                ours.get("path", []), theirs.get("path", []), strict=True
            ):
                _same(mine["metrics"], single_point["metrics"])
        points = zip(
            docs["sharpness"]["results"]["points"], sharp["results"]["points"], strict=True
        )
        for ours, theirs in points:  # common random numbers: the same draws on every rank
            for name, metrics in theirs["metrics"].items():
                mine = ours["metrics"][name]
                assert mine["num_examples"] == metrics["num_examples"]
                assert mine["perturbed_error"] == pytest.approx(metrics["perturbed_error"])
                assert mine["sharpness"] == pytest.approx(metrics["sharpness"], rel=1e-4, abs=1e-6)

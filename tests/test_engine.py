"""The engine streams: each image decoded once per pass, a block at a time, whatever the
number of points; blocks change nothing in the numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import Counting, save_dataset

from clipsharp.analyses.interpolate import Interpolation, run_interpolation
from clipsharp.analyses.layerwise import run_layerwise
from clipsharp.analyses.sharpness import run_sharpness
from clipsharp.core.models import eval_transform
from clipsharp.core.workspace import open_workspace
from clipsharp.data.load import load_eval_data
from clipsharp.data.specs import DatasetSpec
from clipsharp.options import (
    DataOptions,
    EvalOptions,
    LayerwiseOptions,
    PathOptions,
    RunOptions,
    SharpnessOptions,
)

ALPHAS = PathOptions(alphas=tuple(i / 10 for i in range(11)))


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """50 images: more than a block of 8, more than a batch of 4."""
    return save_dataset(tmp_path_factory.mktemp("larger") / "larger", 50, seed=7)


def workspace(pair, dataset, block_images=None, batch_size=4):
    return open_workspace(
        {"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned},
        [DatasetSpec.parse(str(dataset), role="ood")],
        data=DataOptions(),
        evaluation=EvalOptions(device="cpu", batch_size=batch_size, block_images=block_images),
    )


def options(block_images=None, path=ALPHAS):
    return RunOptions(DataOptions(), EvalOptions("cpu", 4, block_images=block_images), path)


def counted(ws):
    """The workspace with its datasets reopened through one counting transform."""
    from torchvision import transforms

    counting = Counting()
    transform = eval_transform(ws.arch, ws.classifier.model)
    steps = transforms.Compose([counting, *transform.transforms])
    datasets = [
        replace(load_eval_data(d.spec, steps, DataOptions()), name=d.name) for d in ws.datasets
    ]
    return replace(ws, datasets=datasets), counting


def test_each_image_is_decoded_once_and_held_a_block_at_a_time(pair, larger):
    ws, counting = counted(workspace(pair, larger, block_images=8))
    analysis = Interpolation(options(8))
    held = []

    def watch(task, done, total):
        if not task.startswith("interpolate"):  # the head's encoding, for one
            return
        points = len(analysis.alphas)
        finished = done // points // 8 * 8  # images of the blocks whose every point is done
        held.append(counting.calls - finished)
        assert total == 50 * points

    engine = ws.engine(4, progress=watch)
    with ws.restoring():
        measured = engine.evaluate(analysis.points(ws), label="interpolate")
    assert counting.calls == 50  # 11 points, one decoding of each image
    assert held[0] == 0 and held[1] == 8  # nothing decoded up front; then the first block
    assert max(held) <= 8  # never more than one block of images at once
    whole = run_interpolation(workspace(pair, larger), options())  # one block of 50
    for point in whole.results["path"]:
        streamed = measured[repr(point["alpha"])]["larger"].to_dict()
        assert streamed == point["metrics"]["larger"]  # the same sums, bit for bit


def test_a_dataset_given_twice_is_streamed_once_with_the_same_metrics_twice(pair, larger):
    twice = [DatasetSpec.parse(str(larger), role="id"), DatasetSpec.parse(str(larger), "ood")]
    ws, counting = counted(
        open_workspace(
            {"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned},
            twice,
            data=DataOptions(),
            evaluation=EvalOptions(device="cpu", batch_size=4, block_images=8),
        )
    )
    doc = run_interpolation(ws, options(8)).to_dict()
    assert counting.calls == 50  # not 100: the second is the first's twin
    first, second = (d["name"] for d in doc["inputs"]["datasets"])
    for point in doc["results"]["path"]:
        assert point["metrics"][first] == point["metrics"][second]
        assert point["metrics"][first]["num_examples"] == 50


def test_layerwise_prefix_on_blocks_equals_full_forwards(pair, larger):
    path = PathOptions(alphas=(0.0, 0.5, 1.0))
    cached = run_layerwise(
        workspace(pair, larger, 8), options(8, path), LayerwiseOptions(prefix_cache=True)
    )
    full = run_layerwise(
        workspace(pair, larger, 8), options(8, path), LayerwiseOptions(prefix_cache=False)
    )
    assert cached.results == full.results  # bit for bit, block after block


def test_sharpness_draws_are_the_same_on_every_block(pair, larger):
    path = PathOptions(alphas=(0.0, 1.0))
    measure = SharpnessOptions(rhos=(0.3,), iterations=3)
    blocks = run_sharpness(workspace(pair, larger, 8), options(8, path), measure)
    whole = run_sharpness(workspace(pair, larger), options(None, path), measure)
    assert blocks.results == whole.results  # common random numbers across blocks


def test_weights_are_bit_identical_after_a_streamed_run(pair, larger):
    ws = workspace(pair, larger, 8)
    before = {k: t.clone() for k, t in ws.classifier.tensors.items()}
    run_sharpness(ws, options(8, PathOptions(alphas=(0.5,))), SharpnessOptions(iterations=2))
    assert all(torch.equal(ws.classifier.tensors[k], t) for k, t in before.items())

"""The engine streams: each image decoded once per pass, a block at a time, whatever the
number of points; blocks change nothing in the numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch
from conftest import Counting, plain_metrics, run_options, save_dataset, workspace
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import Interpolation, run_interpolation
from clipsharp.analyses.layerwise import run_layerwise
from clipsharp.analyses.sharpness import run_sharpness
from clipsharp.core.analysis import Analysis
from clipsharp.core.analysis import run as analysis_run
from clipsharp.core.engine import Point
from clipsharp.core.models import eval_transform
from clipsharp.data.load import load_eval_data
from clipsharp.options import DataOptions, LayerwiseOptions, RunOptions, SharpnessOptions

ALPHAS = tuple(i / 10 for i in range(11))


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """50 images: more than a block of 8, more than a batch of 4."""
    return save_dataset(tmp_path_factory.mktemp("larger") / "larger", 50, seed=7)


def options(block_images=None, alphas=ALPHAS):
    """Batches of 4, blocks of ``block_images`` (None: one block of every image)."""
    return run_options(alphas, batch_size=4, block_images=block_images)


def opened(pair, dataset, block_images=None):
    """A workspace of the pair on ``dataset`` (as OOD), evaluated as ``options`` says."""
    return workspace(pair, options(block_images), datasets=[(dataset, "ood")])


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


@pytest.mark.parametrize("prefetch", [0, 1])
def test_each_image_is_decoded_once_and_held_a_block_at_a_time(pair, larger, prefetch):
    """Without prefetch one block is held; with one block of prefetch, two at most."""
    ws, counting = counted(opened(pair, larger, block_images=8))
    ws = replace(ws, prefetch_blocks=prefetch)
    held_at_most = 8 * (prefetch + 1)
    analysis = Interpolation(options(8))
    held = []

    def watch(event):
        if event.task != "interpolate":  # the head's encoding, for one
            return
        done, total = event.done, event.total
        points = len(analysis.alphas)
        finished = done // points // 8 * 8  # images of the blocks whose every point is done
        held.append(counting.calls - finished)
        assert total == 50 * points

    engine = ws.engine(4, progress=watch)
    with ws.restoring():
        measured = engine.evaluate(analysis.points(ws), label="interpolate")
    assert counting.calls == 50  # 11 points, one decoding of each image
    assert held[0] == 0  # nothing decoded up front
    assert 8 <= held[1] <= held_at_most  # the first block (and, prefetched, part of the next)
    assert max(held) <= held_at_most  # never more than the block and the one ahead
    whole = run_interpolation(opened(pair, larger), options())  # one block of 50
    for point in whole.results["path"]:
        streamed = measured[repr(point["alpha"])]["larger"].to_dict()
        assert streamed == point["metrics"]["larger"]  # the same sums, bit for bit


def test_a_dataset_given_twice_is_streamed_once_with_the_same_metrics_twice(pair, larger):
    twice = [(larger, "id"), (larger, "ood")]
    ws, counting = counted(workspace(pair, options(8), datasets=twice))
    doc = run_interpolation(ws, options(8)).to_dict()
    assert counting.calls == 50  # not 100: the second is the first's twin
    first, second = (d["name"] for d in doc["inputs"]["datasets"])
    for point in doc["results"]["path"]:
        assert point["metrics"][first] == point["metrics"][second]
        assert point["metrics"][first]["num_examples"] == 50


def test_layerwise_prefix_on_blocks_equals_full_forwards(pair, larger):
    alphas = (0.0, 0.5, 1.0)
    cached = run_layerwise(
        opened(pair, larger, 8), options(8, alphas), LayerwiseOptions(prefix_cache=True)
    )
    full = run_layerwise(
        opened(pair, larger, 8), options(8, alphas), LayerwiseOptions(prefix_cache=False)
    )
    assert cached.results == full.results  # bit for bit, block after block


def test_sharpness_draws_are_the_same_on_every_block(pair, larger):
    alphas = (0.0, 1.0)
    measure = SharpnessOptions(rhos=(0.3,), iterations=3)
    blocks = run_sharpness(opened(pair, larger, 8), options(8, alphas), measure)
    whole = run_sharpness(opened(pair, larger), options(None, alphas), measure)
    assert blocks.results == whole.results  # common random numbers across blocks


def test_weights_are_bit_identical_after_a_streamed_run(pair, larger):
    ws = opened(pair, larger, 8)
    before = {k: t.clone() for k, t in ws.classifier.tensors.items()}
    run_sharpness(ws, options(8, (0.5,)), SharpnessOptions(iterations=2))
    assert all(torch.equal(ws.classifier.tensors[k], t) for k, t in before.items())


@dataclass(frozen=True)
class ShiftTextProjection(Analysis):
    """A toy analysis of the kind a newcomer writes: its points move one text-tower tensor
    (``text_projection``, by multiples of a fixed direction), or the image tower, and
    declare nothing about the text."""

    command: ClassVar[str] = "toy"
    options: RunOptions
    steps: tuple[float, ...] = (0.0, 1.0, -1.0)

    def config(self, workspace):
        return {"steps": list(self.steps)}

    def points(self, workspace):
        tensors = workspace.classifier.tensors
        text, proj = tensors["text_projection"].clone(), tensors["visual.proj"].clone()

        def moved(key, value, change):
            return Point(
                f"{key}+{change.sum().item():.3f}",
                write=lambda: workspace.classifier.write(key, value + change),
                undo=lambda: workspace.classifier.write(key, value),
            )

        points = [moved("text_projection", text, s * direction(text)) for s in self.steps]
        return [*points, moved("visual.proj", proj, direction(proj))]  # after a text point

    def summarize(self, workspace, measured):
        return {k: {d: m.to_dict() for d, m in v.items()} for k, v in measured.items()}, {}


def direction(tensor: torch.Tensor) -> torch.Tensor:
    """A fixed random direction of the tensor's size and scale."""
    noise = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(0))
    return noise * tensor.std()


def test_a_new_analysis_moving_a_text_tensor_gets_its_own_heads_undeclared(pair):
    """The heads follow what the points write (three blocks: cached heads are reused)."""
    run = run_options(batch_size=4, block_images=8)
    ws = workspace(pair, run)
    analysis = ShiftTextProjection(run)
    keys = [p.key for p in analysis.points(ws)]
    results = analysis_run(analysis, ws).results
    ft = load_file(str(pair.fine_tuned))
    states = [ft | {"text_projection": ft["text_projection"] + s * direction(ft["text_projection"])}
              for s in analysis.steps]  # fmt: skip
    states.append(ft | {"visual.proj": ft["visual.proj"] + direction(ft["visual.proj"])})
    for key, state in zip(keys, states, strict=True):
        accuracy, loss = plain_metrics(state, pair.shifted)  # its head built by open_clip
        assert results[key]["shifted"]["accuracy"] == pytest.approx(accuracy, abs=1e-12), key
        assert results[key]["shifted"]["loss"] == pytest.approx(loss, rel=1e-4), key
    assert len({results[key]["shifted"]["loss"] for key in keys}) == len(keys)
    # once each, not per block: the three text points, and proj's (the text rewritten by the
    # undo before it)
    assert ws.heads.encodings == 4


def test_the_text_identity_changes_with_every_text_write_and_only_then(pair):
    """Writes through ``classifier.tensors`` or the model's parameters; image writes aside."""
    ws = workspace(pair)
    heads, tensors = ws.heads, ws.classifier.tensors
    heads.invalidate()
    assert heads.text_state("unused") is None  # the text as at invalidate
    tensors["visual.proj"].mul_(1.0)  # the image tower: the same text
    assert heads.text_state("unused") is None
    with torch.no_grad():
        ws.classifier.model.ln_final.weight.mul_(2.0)
    assert heads.text_state("doubled") == "doubled"
    assert heads.text_state("unused") == "doubled"  # no write since
    tensors["ln_final.weight"].div_(2.0)
    assert heads.text_state() not in (None, "doubled")  # a new identity, unnamed

"""The feed (issue 22): prefetched blocks, blocks finished once, torchvision's JPEG decoder,
and the data cache on a full disk or interrupted (issue 23 items 7 and 12)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, pair_args, plain_metrics, run_options, save_dataset, workspace
from PIL import Image
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import Interpolation
from clipsharp.core.feed import Prefetch, host_blocks
from clipsharp.data import cache, load
from clipsharp.data.specs import DatasetSpec
from clipsharp.errors import DatasetError
from clipsharp.options import DataOptions, EvalOptions, auto_prefetch, auto_workers

# ---- Prefetch ------------------------------------------------------------------------------


class Produced:
    """A generator of ``n`` items that counts what exists (made, not yet given back)."""

    def __init__(self, n: int) -> None:
        self.n, self.made, self.closed = n, 0, False

    def __iter__(self):
        try:
            for i in range(self.n):
                self.made += 1
                yield i
        finally:
            self.closed = True


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_prefetch_keeps_the_order_and_at_most_depth_items_ahead(depth):
    produced = Produced(20)
    seen, ahead = [], []
    for item in Prefetch(iter(produced), depth):
        threading.Event().wait(0.002)  # let the producer run as far as it may
        ahead.append(produced.made - len(seen) - 1)
        seen.append(item)
    assert seen == list(range(20))
    assert max(ahead) <= depth and (depth == 0 or max(ahead) == depth)


def test_prefetch_raises_the_producers_error_and_stops_it_when_closed_early():
    def failing():
        yield 1
        raise DatasetError("row 2 cannot be read")

    with pytest.raises(DatasetError, match="row 2"):
        list(Prefetch(failing(), 1))
    produced = Produced(100)
    items = iter(produced)
    for item in Prefetch(items, 1):
        if item == 3:
            break
    assert produced.closed and produced.made <= 6  # closed on its thread, not run to the end
    assert not [t for t in threading.enumerate() if t.name == "clipsharp-feed"]


def test_host_blocks_are_whole_batches_of_the_block():
    batches = [torch.zeros(4, 1) for _ in range(5)] + [torch.zeros(2, 1)]
    sizes = [[len(b) for b in block] for block in host_blocks(iter(batches), 8)]
    assert sizes == [[4, 4], [4, 4], [4, 2]]


def test_workers_and_prefetch_follow_cores_and_device():
    assert auto_workers(2) == 0 and auto_workers(16) == 8  # the CPU: cores beyond 2, at most 8
    assert auto_workers(16, gpu=True) == 15 and auto_workers(64, gpu=True) == 16
    assert auto_workers(1, gpu=True) == 0
    assert auto_prefetch(2) == 0 and auto_prefetch(4) == 1  # the CPU: with workers only
    assert auto_prefetch(1, gpu=True) == 1
    with pytest.raises(Exception, match="--prefetch-blocks must be 0 or more"):
        EvalOptions(prefetch_blocks=-1)


# ---- the engine: the same sums whatever the feed ---------------------------------------------


def test_prefetch_and_blocks_finished_once_give_the_same_sums_bit_for_bit(pair, larger):
    """50 images in blocks of 8 (batches of 4): every feed gives the plain loop's numbers."""
    options = run_options((0.0, 0.3, 1.0), batch_size=4, block_images=8)
    measured = []
    for prefetch, finish in [(0, False), (1, False), (2, True), (1, True)]:
        ws = workspace(pair, options, datasets=[(larger, "ood")])
        ws = replace(ws, prefetch_blocks=prefetch)
        engine = replace(ws.engine(4), finish_blocks=finish)
        with ws.restoring():
            metrics = engine.evaluate(Interpolation(options).points(ws))
        measured.append({k: {d: m.to_dict() for d, m in v.items()} for k, v in metrics.items()})
    assert all(m == measured[0] for m in measured[1:])
    zero_shot, fine_tuned = (load_file(str(path)) for path in (pair.zero_shot, pair.fine_tuned))
    for alpha in (0.0, 0.3, 1.0):
        state = {k: (1 - alpha) * zero_shot[k] + alpha * v for k, v in fine_tuned.items()}
        accuracy, loss = plain_metrics(state, larger)
        got = measured[0][repr(alpha)]["larger"]
        assert got["num_examples"] == 50 and got["accuracy"] == accuracy
        assert got["loss"] == pytest.approx(loss, rel=1e-4)


# ---- --decode: torchvision's decoder (on the CPU here, as a stand-in for the GPU) ------------


def photo(rng: np.random.Generator, width: int = 120, height: int = 90) -> Image.Image:
    """A smooth, photo-like image: gradients, a few discs, a little noise."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([x, y, 1 - x * y], axis=-1) * rng.uniform(80, 220, 3)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.05, 0.3)
        base[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    noisy = base + rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """50 images: more than a block of 8, more than a batch of 4."""
    return save_dataset(tmp_path_factory.mktemp("larger") / "larger", 50, seed=7)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """An image folder of 12 JPEGs (quality 90) and 2 PNGs in 2 classes."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(14):
        folder = root / ("sky" if i % 2 else "sea")
        folder.mkdir(exist_ok=True)
        kind = "png" if i >= 12 else "jpg"
        photo(rng).save(folder / f"{i:02d}.{kind}", quality=90)
    return root


def crops(source, device=None) -> torch.Tensor:
    if device is not None:
        source = replace(source, decode_device=torch.device(device))
    return torch.cat([b.cpu() for b in source.batches(range(len(source)), 5)])


def test_torchvision_decoder_is_near_pil_and_png_keeps_pil(photos, capfd):
    from open_clip.transform import image_transform

    transform = image_transform(64, is_train=False)  # Resize (bicubic), CenterCrop, RGB
    data = load.load_eval_data(DatasetSpec.parse(str(photos), role="ood"), transform, DataOptions())
    by_pil, by_torchvision = crops(data.images), crops(data.images, "cpu")
    assert by_torchvision.shape == by_pil.shape == (14, 3, 64, 64)
    assert by_torchvision.dtype == torch.uint8
    difference = (by_torchvision.int() - by_pil.int()).abs()
    png = [i for i, row in enumerate(data.images.rows) if _is_png(data, row)]
    jpeg = [i for i in range(14) if i not in png]
    assert len(png) == 2 and difference[png].max() == 0  # PNGs went the PIL path
    within_one = (difference[jpeg] <= 1).float().mean()
    assert within_one > 0.999 and difference[jpeg].max() <= 8  # a few edge pixels move more
    assert 0 < difference[jpeg].float().mean() < 0.3  # not the PIL path: rounds differently
    assert capfd.readouterr().err.count("decoded on the CPU (PIL)") == 1  # one note a pass


def _is_png(data, position) -> bool:
    value = data.images.dataset.with_format("arrow")[int(position)]["image"][0].as_py()
    return Path(value["path"]).suffix == ".png"


def test_decode_cuda_enters_the_fingerprint_and_the_report(photos, monkeypatch):
    from open_clip.transform import image_transform

    transform = image_transform(64, is_train=False)
    spec = DatasetSpec.parse(str(photos), role="ood")
    plain = load.load_eval_data(spec, transform, DataOptions())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = load.load_all([spec], transform, DataOptions(decode="cuda"), device=torch.device("cuda"))
    assert gpu[0].fingerprint != plain.fingerprint
    assert gpu[0].describe()["decoder"] == "torchvision:cuda"
    assert plain.describe()["decoder"] == "pil"


def test_decode_cuda_without_a_gpu_is_refused_with_exit_2(pair):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --decode cuda is allowed")
    result = invoke("interpolate", *pair_args(pair, "--decode", "cuda"))
    assert result.exit_code == 2
    assert "--decode cuda needs a CUDA GPU" in result.output and "--decode cpu" in result.output
    result = invoke("interpolate", *pair_args(pair, "--decode", "gpu"))
    assert result.exit_code == 2 and "--decode 'gpu' is unknown" in result.output


# ---- the data cache: full disks, interruptions, stale partial files ---------------------------


def cached(source_path, folder: Path, **options):
    return load.load_eval_data(
        DatasetSpec.parse(str(source_path), role="ood"),
        _to_tensor(),
        DataOptions(cache_dir=folder, **options),
    )


def _to_tensor():
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor()])


def test_a_full_disk_refuses_the_cache_before_decoding_and_leaves_nothing(
    larger, tmp_path, monkeypatch
):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.os, "posix_fallocate", full)
    data = cached(larger, tmp_path / "cache")
    with pytest.raises(DatasetError, match="no space left on device") as caught:
        data.load_images(batch_size=8)
    assert str(tmp_path / "cache") in str(caught.value) and "--data-cache" in str(caught.value)
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_really_full_tmpfs_gives_exit_2_not_a_bus_error(pair, larger, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)])
    if made.returncode:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        result = invoke(
            "interpolate", *pair_args(pair, "--ood", larger, "--data-cache", mount / "c")
        )
        assert result.exit_code == 2, result.output
        assert "no space left on device" in result.output
        assert not list((mount / "c").iterdir())
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_an_interrupted_pass_leaves_no_partial_and_the_next_run_fills_the_cache(larger, tmp_path):
    folder = tmp_path / "cache"
    data = cached(larger, folder)
    batches = data.images.batches(range(50), 8)
    next(batches)
    assert len(list(folder.glob("*.partial"))) == 1  # being written
    with pytest.raises(KeyboardInterrupt):
        batches.throw(KeyboardInterrupt)  # Ctrl-C while the engine holds the stream
    assert not list(folder.iterdir())
    images = cached(larger, folder).load_images(batch_size=8)
    assert sorted(p.suffix for p in folder.iterdir()) == [".npy", ".npy"]
    torch.testing.assert_close(cached(larger, folder).load_images(batch_size=8), images)


def test_ctrl_c_in_a_prefetched_run_leaves_no_partial(pair, larger, tmp_path):
    folder = tmp_path / "cache"
    options = run_options((0.0, 1.0), batch_size=4, block_images=8)
    ws = workspace(pair, options, datasets=[(larger, "ood")])
    ws = replace(ws, datasets=[cached(larger, folder)], prefetch_blocks=1)
    blocks = []

    def interrupt(event):
        if event.done and event.point:
            blocks.append(event.done)
            if len(blocks) == 3:
                raise KeyboardInterrupt

    engine = ws.engine(4, progress=interrupt)
    with pytest.raises(KeyboardInterrupt), ws.restoring():
        engine.evaluate(Interpolation(options).points(ws))
    assert not list(folder.iterdir())


def test_stale_partials_of_this_fingerprint_are_swept_others_kept(larger, tmp_path):
    folder = tmp_path / "cache"
    data = cached(larger, folder)
    fingerprint = data.fingerprint
    dead = _dead_pid()
    host = __import__("socket").gethostname()
    stale = folder / f"{fingerprint}-0-50.npy.{host}-{dead}.partial"
    old_style = folder / f"{fingerprint}-0-50.npy.partial"
    running = subprocess.Popen(["sleep", "60"])  # another process writing the entry
    live = folder / f"{fingerprint}-0-50.npy.{host}-{running.pid}.partial"
    elsewhere = folder / f"{fingerprint}-0-50.npy.otherhost-{dead}.partial"
    other = folder / f"0123456789abcdef-0-50.npy.{host}-{dead}.partial"
    folder.mkdir()
    for path in (stale, old_style, live, elsewhere, other):
        path.write_bytes(b"x")
    try:
        data.load_images(batch_size=8)
    finally:
        running.kill()
        running.wait()
    left = {p.name for p in folder.glob("*.partial")}
    assert left == {live.name, elsewhere.name, other.name}


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_cached_rows_are_checked_on_threads_and_a_damaged_one_refused(larger, tmp_path):
    folder = tmp_path / "cache"
    first = cached(larger, folder).load_images(batch_size=8)
    entry = next(p for p in folder.glob("*.npy") if not p.name.endswith(".rows.npy"))
    array = np.load(entry, mmap_mode="r+")
    array[33, 0, 0, 0] ^= 1
    array.flush()
    del array
    with pytest.raises(DatasetError, match="row 33 does not match its digest"):
        cached(larger, folder).load_images(batch_size=8)
    assert not entry.exists()
    torch.testing.assert_close(cached(larger, folder).load_images(batch_size=8), first)


def test_the_digest_is_blake2b_of_the_rows_bytes():
    import hashlib

    row = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    expected = hashlib.blake2b(row.tobytes(), digest_size=8).digest()
    assert cache.digest(row).tobytes() == expected
    assert (
        cache.digest(row.transpose(1, 2, 0))
        == np.frombuffer(
            hashlib.blake2b(row.transpose(1, 2, 0).tobytes(), digest_size=8).digest(), np.uint64
        )[0]
    )


# ---- workers decode chunks of a batch --------------------------------------------------------


def test_a_batch_is_shared_among_the_workers_and_comes_out_the_same(larger):
    from clipsharp.data.stream import _chunk

    assert _chunk(256, 15) == 16 and _chunk(256, 8) == 32 and _chunk(8, 3) == 2
    assert _chunk(7, 3) == 1 and _chunk(128, 0) == 128 and _chunk(128, 1) == 128
    data = load.load_eval_data(
        DatasetSpec.parse(str(larger), role="ood"), _to_tensor(), DataOptions()
    )
    alone = list(replace(data.images, num_workers=0).batches(range(50), 8))
    shared = list(replace(data.images, num_workers=3).batches(range(50), 8))  # chunks of 2
    assert [len(b) for b in shared] == [8] * 6 + [2]
    for a, b in zip(alone, shared, strict=True):
        assert torch.equal(a, b) and a.stride() == b.stride()


def test_torchvision_decoder_reads_a_webdatasets_jpegs_from_their_shard(tmp_path):
    """--decode cuda's path (here torchvision on the CPU) takes a webdataset's JPEG members
    from the shard, as the PIL path does: the same crops up to rounding, not PIL's fallback."""
    from open_clip.transform import image_transform
    from test_webdataset import write_webdataset

    root = write_webdataset(tmp_path / "wds", 6, seed=2, shards=1)
    transform = image_transform(32, is_train=False)
    data = load.load_eval_data(DatasetSpec.parse(str(root), role="ood"), transform, DataOptions())
    by_pil, by_torchvision = crops(data.images), crops(data.images, "cpu")
    assert by_torchvision.shape == by_pil.shape == (6, 3, 32, 32)
    difference = (by_torchvision.int() - by_pil.int()).abs()
    assert difference.float().mean() < 1.0 and difference.max() <= 16

"""``gpu.py --scale``: clipsharp against the bare forward loop at 10,000 ImageNet-sized JPEGs.

Writes 10,000 synthetic JPEGs of 500 x 375 px (quality 90, in parallel) once into a
``save_to_disk`` folder, then, for ViT-B-32 and ViT-L-14 in bf16 (random weights):

- bare: image forwards/s of a plain open_clip loop over a batch already on the device;
- clipsharp (after a warm-up run on two batches): image forwards/s of ``run_interpolation``
  with 11 alphas, CPU decoding in the default workers, then with ``--decode cuda``, then
  (first architecture only, to stay within 6 minutes) filling and reading back a
  ``--data-cache``;
- decode: images/s of clipsharp's image stream alone, CPU workers and ``--decode cuda``;
- busy: the fraction of the clipsharp run's wall time the GPU spent in its forwards, from
  CUDA events around each forward (NVML's utilisation too, when pynvml is installed).

Sized to finish in under 6 minutes on one H200. ``--device cpu --quick``: a tiny model,
64 images, 3 alphas, to check that it runs.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from synthetic import command_line, model_config, save_jpegs, write_pair

WIDTH, HEIGHT, QUALITY = 500, 375, 90  # ImageNet val's typical size


def jpeg(seed: int) -> bytes:
    """One smooth random JPEG of WIDTH x HEIGHT (coarse noise, bilinear upsampled)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def write_jpegs(path: Path, count: int, classes: int = 10) -> Path:
    """A save_to_disk folder of ``count`` JPEGs (encoded on every core), written once."""

    if (path / "state.json").is_file():
        return path
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        encoded = list(pool.map(jpeg, range(count), chunksize=64))
    return save_jpegs(path, encoded, classes)


@dataclass(frozen=True)
class Row:
    """One line of the table: a rate, and what it is measured against."""

    arch: str
    what: str
    rate: float  # image forwards (or images decoded) per second
    seconds: float
    ratio: float | None = None  # bare seconds / these seconds, for the same forwards
    busy: str = ""  # GPU busy fraction during the run

    def line(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:>8.0%}"
        rate = f"{self.arch:<10}{self.what:<28}{self.rate:>10.0f}{self.seconds:>9.2f}"
        return f"{rate}{ratio:>8}  {self.busy}"


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_rate(args, zs: Path, ft: Path, forwards: int) -> float:
    """Seconds of ``forwards`` image forwards of a plain model, one batch on the device."""
    import baseline
    import torch

    device, dtype = torch.device(args.device), baseline.PRECISIONS[args.precision]
    _, fine_tuned, config = baseline.read_pair(str(zs), str(ft))
    model = baseline.build(config, fine_tuned, device, dtype)
    classes = [f"class {i}" for i in range(10)]
    head = baseline.head(model, config, classes, "simple", device)
    size = config["vision_cfg"]["image_size"]
    images = torch.randn(args.batch_size, 3, size, size, device=device, dtype=dtype)
    labels = torch.arange(args.batch_size, device=device) % 10
    steps = max(1, forwards // args.batch_size)
    baseline.plain_forwards(model, [images], [labels], head, 2, device, dtype)  # warm-up
    synchronize(args.device)
    start = time.perf_counter()
    baseline.plain_forwards(model, [images], [labels], head, steps, device, dtype)
    synchronize(args.device)
    seconds = time.perf_counter() - start
    del model
    return seconds * forwards / (steps * args.batch_size)


@contextmanager
def busy_meter(classifier, device: str):
    """Times each forward of the working model with CUDA events; yields a callable giving
    "events X% [nvml Y%]" for the wall time since entry."""
    import torch

    if not device.startswith("cuda"):
        yield lambda wall: ""
        return
    pairs, features = [], classifier.features

    def timed(images):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = features(images)
        end.record()
        pairs.append((start, end))
        return out

    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=_nvml, args=(samples, stop), daemon=True)
    sampler.start()
    classifier.features = timed
    try:
        yield lambda wall: _busy(pairs, samples, wall)
    finally:
        classifier.features = features
        stop.set()
        sampler.join()


def _busy(pairs, samples, wall: float) -> str:
    import torch

    torch.cuda.synchronize()
    busy = sum(start.elapsed_time(end) for start, end in pairs) / 1000 / wall
    nvml = f", nvml {np.mean(samples):.0f}%" if samples else ""
    return f"events {busy:.0%}{nvml}"


def _nvml(samples: list, stop: threading.Event) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # pynvml not installed, or no driver: events alone
        return
    while not stop.wait(0.05):
        samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)


def clipsharp_rate(
    args, zs, ft, data: Path, decode: str, cache: Path | None, limit: int | None = None
) -> tuple:
    """(seconds, busy, dataset) of run_interpolation with ``args.alphas`` points, a fresh
    workspace (on ``limit`` images: a warm-up)."""
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import open_workspace
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions

    data_options = DataOptions(limit=limit, decode=decode, cache_dir=cache)
    evaluation = EvalOptions(args.device, args.batch_size, args.precision, "simple")
    ws = open_workspace(
        {"zero_shot": zs, "fine_tuned": ft},
        [DatasetSpec.parse(str(data), role="ood")],
        data=data_options,
        evaluation=evaluation,
    )
    alphas = tuple(i / (args.alphas - 1) for i in range(args.alphas))
    options = RunOptions(data_options, evaluation, PathOptions(alphas=alphas))
    synchronize(args.device)
    start = time.perf_counter()
    with busy_meter(ws.classifier, args.device) as busy:
        run_interpolation(ws, options)
        synchronize(args.device)
        seconds = time.perf_counter() - start
        fraction = busy(seconds)
    return seconds, fraction, ws.datasets[0]


def decode_row(args, data, what: str, decode_device) -> Row:
    """Images/s of one pass of clipsharp's image stream, no model."""
    images = replace(data.images, decode_device=decode_device, cache_dir=None)
    start = time.perf_counter()
    for _ in images.batches(range(len(images)), args.batch_size, pin=args.device != "cpu"):
        pass
    synchronize(args.device)
    seconds = time.perf_counter() - start
    return Row("any", what, len(images) / seconds, seconds)


def measure(args, arch: str, root: Path, data: Path) -> list[Row | str]:
    import torch

    rows: list[Row | str] = []
    folder = root / arch
    folder.mkdir()
    zs, ft = write_pair(model_config(None if arch == "small" else arch), folder, args.device)
    forwards = args.images * args.alphas
    bare = bare_rate(args, zs, ft, forwards)
    gc.collect()
    rows.append(Row(arch, "bare loop", forwards / bare, bare))
    cache = root / "cache"
    runs = [
        ("interpolate, CPU decoding", "cpu", None),
        ("interpolate, --decode cuda", "cuda", None),
    ]
    if arch == args.archs[0]:  # the cache's target is ViT-B-32's; ViT-L-14 would add ~100 s
        runs += [
            ("interpolate, cache (cold)", "cpu", cache),
            ("interpolate, cache (warm)", "cpu", cache),
        ]
    clipsharp_rate(args, zs, ft, data, "cpu", None, limit=2 * args.batch_size)  # warm-up
    dataset = None
    for what, decode, cache_dir in runs:
        if decode == "cuda" and not args.device.startswith("cuda"):
            rows.append(f"{arch:<10}{what:<28} skipped: needs a GPU")
            continue
        try:
            seconds, busy, dataset = clipsharp_rate(args, zs, ft, data, decode, cache_dir)
            rows.append(Row(arch, what, forwards / seconds, seconds, bare / seconds, busy))
        except Exception as e:  # one configuration failing must not stop the others
            traceback.print_exc()
            rows.append(f"{arch:<10}{what:<28} failed: {type(e).__name__}: {e}"[:300])
        gc.collect()
    shutil.rmtree(cache, ignore_errors=True)
    if arch == args.archs[0] and dataset is not None:
        rows.append(decode_row(args, dataset, "decode, CPU workers", None))
        if args.device.startswith("cuda"):
            gpu = torch.device(args.device)
            rows.append(decode_row(args, dataset, "decode, --decode cuda", gpu))
        else:  # torchvision's decoder on the CPU: the --decode cuda path, checked here
            rows.append(decode_row(args, dataset, "decode, torchvision (cpu)", torch.device("cpu")))
    for path in (zs, ft):
        path.unlink()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def main(args) -> None:
    import torch

    cpu = args.device == "cpu"
    args.archs = (args.archs or ("small" if cpu else "ViT-B-32,ViT-L-14")).split(",")
    args.images = args.images or (64 if args.quick else 10_000)
    args.alphas = args.alphas or (3 if args.quick else 11)
    args.precision = "fp32" if cpu else "bf16"
    args.batch_size = min(args.batch_size, 32) if cpu else args.batch_size
    started = time.perf_counter()
    rows: list[Row | str] = []
    root = Path(args.scale_dir or tempfile.mkdtemp(prefix="clipsharp-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = write_jpegs(root / f"jpegs-{args.images}", args.images)
        written = time.perf_counter() - started
        for arch in args.archs:
            (root / "run").mkdir()
            try:
                rows += measure(args, arch, root / "run", data)
            except Exception as e:
                traceback.print_exc()
                rows.append(f"{arch:<10} failed: {type(e).__name__}: {e}"[:300])
            finally:
                shutil.rmtree(root / "run", ignore_errors=True)
    finally:
        if not args.scale_dir:
            shutil.rmtree(root, ignore_errors=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"command: {command_line()}")
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} cores; "
          f"{args.images} JPEGs {WIDTH}x{HEIGHT} q{QUALITY} (written in {written:.0f} s); "
          f"{args.alphas} alphas; batch {args.batch_size}; {args.precision}")  # fmt: skip
    print(f"{'arch':<10}{'what':<28}{'img/s':>10}{'s':>9}{'of bare':>8}  GPU busy")
    for row in rows:
        print(row if isinstance(row, str) else row.line())
    print("img/s: image forwards per second (decode rows: images decoded per second); "
          "of bare: the bare loop's seconds over these, for the same forwards")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s")

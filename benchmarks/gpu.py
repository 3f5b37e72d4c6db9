"""Images per second of ``run_interpolation`` on a GPU, against a bare forward loop (issue 10).

For each architecture (open_clip configs, random weights) and precision, clipsharp's
``interpolate`` (library call: streaming, decoding in DataLoader workers, lerp per point)
runs over random 224-px JPEGs written to a temporary folder first; the baseline is a bare
loop of forwards of a plain open_clip model of the same dtype over the same images,
decoded and moved to the device beforehand. Printed per configuration: set-up seconds,
image forwards per second of both, and clipsharp's time over the bare loop's (1.0: no
cost beyond the forwards; decoding and weight writes are what it adds). One configuration
that fails is printed and the others still run. Nothing is downloaded.

    .venv/bin/python benchmarks/gpu.py                          # H200: about 3 minutes
    .venv/bin/python benchmarks/gpu.py --quick                  # ViT-B-32 only, fewer images
    .venv/bin/python benchmarks/gpu.py --device cpu --quick     # a tiny model: checks it runs
    .venv/bin/python benchmarks/gpu.py --scale                  # 10,000 JPEGs, bf16 (scale.py)
    .venv/bin/python benchmarks/gpu.py --scale --device cpu --quick
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from synthetic import command_line, model_config, write_images, write_pair


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--archs", default=None, help="comma list; 'small' is a tiny ViT")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--images", type=int, default=None, help="default 1024 (quick: 128)")
    parser.add_argument("--alphas", type=int, default=None, help="points, 0 and 1 included")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=8, help="decoding processes")
    parser.add_argument("--block-images", type=int, default=None, help="engine block size")
    parser.add_argument("--quick", action="store_true", help="fewer images and points")
    parser.add_argument("--scale", action="store_true", help="10,000 JPEGs of 500x375, bf16")
    parser.add_argument("--scale-dir", default=None, help="--scale: keep the JPEGs here")
    args = parser.parse_args()
    if args.scale:
        return args
    cpu = args.device == "cpu"
    if args.archs is None:
        args.archs = "small" if cpu else ("ViT-B-32" if args.quick else "ViT-B-32,ViT-L-14")
    args.images = args.images or (64 if cpu and args.quick else 128 if args.quick else 1024)
    args.alphas = args.alphas or (3 if args.quick else 5)
    if cpu:
        args.num_workers = min(args.num_workers, 1)
        args.batch_size = min(args.batch_size, 64)
    return args


@dataclass(frozen=True)
class Result:
    arch: str
    precision: str
    setup: float  # seconds of open_workspace: read, validate, hash, build, open the data
    ours: float  # seconds of run_interpolation
    bare: float  # seconds of the bare loop, same forwards
    decode: float  # seconds of one pass of clipsharp's image stream alone (no model)
    forwards: int  # image forwards each side ran (images x points)

    def line(self) -> str:
        return (f"{self.arch:<10}{self.precision:<6}{self.setup:>8.1f}"
                f"{self.forwards / self.ours:>12.0f}{self.forwards / self.bare:>12.0f}"
                f"{self.ours:>11.2f}{self.bare:>8.2f}{self.decode:>9.2f}"
                f"{self.ours / self.bare:>8.2f}")  # fmt: skip


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_loop(args, zs: Path, ft: Path, batches, labels, classnames, precision: str) -> float:
    """Seconds of ``points`` passes of plain forwards over the decoded images, on the device."""
    import baseline
    import torch

    device, dtype = torch.device(args.device), baseline.PRECISIONS[precision]
    _, fine_tuned, config = baseline.read_pair(str(zs), str(ft))
    model = baseline.build(config, fine_tuned, device, dtype)
    head = baseline.head(model, config, classnames, "simple", device)
    images = [b.to(device, dtype) for b in batches]
    targets = [y.to(device) for y in labels]
    baseline.plain_forwards(model, images[:1], targets[:1], head, 1, device, dtype)  # warm-up
    synchronize(args.device)
    start = time.perf_counter()
    baseline.plain_forwards(model, images, targets, head, args.alphas, device, dtype)
    synchronize(args.device)
    return time.perf_counter() - start


def clipsharp_run(args, zs: Path, ft: Path, data: Path, precision: str) -> tuple[float, ...]:
    """(set-up, run_interpolation, one pass of the image stream) seconds, a fresh workspace."""
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import open_workspace
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions

    start = time.perf_counter()
    data_options = DataOptions(num_workers=args.num_workers)
    evaluation = EvalOptions(
        args.device, args.batch_size, precision, "simple", block_images=args.block_images
    )
    ws = open_workspace(
        {"zero_shot": zs, "fine_tuned": ft},
        [DatasetSpec.parse(str(data), role="ood")],
        data=data_options,
        evaluation=evaluation,
    )
    setup = time.perf_counter() - start
    alphas = tuple(i / (args.alphas - 1) for i in range(args.alphas))
    options = RunOptions(data_options, evaluation, PathOptions(alphas=alphas))
    synchronize(args.device)
    start = time.perf_counter()
    run_interpolation(ws, options)
    synchronize(args.device)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    images = ws.datasets[0].images
    for _ in images.batches(range(len(images)), args.batch_size, pin=args.device != "cpu"):
        pass
    return setup, ours, time.perf_counter() - start


def measure_arch(args, arch: str, root: Path, data: Path, decoded) -> list[Result | str]:
    import torch

    out: list[Result | str] = []
    config = model_config(None if arch == "small" else arch)
    folder = root / arch
    folder.mkdir()
    zs, ft = write_pair(config, folder, args.device)
    for precision in args.precisions.split(","):
        try:
            bare = bare_loop(args, zs, ft, *decoded, precision)
            gc.collect()
            times = clipsharp_run(args, zs, ft, data, precision)
            out.append(
                Result(arch, precision, *times[:2], bare, times[2], args.images * args.alphas)
            )
        except Exception as e:  # one configuration failing must not stop the others
            traceback.print_exc()
            out.append(f"{arch:<10}{precision:<6} failed: {type(e).__name__}: {e}"[:300])
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    for path in (zs, ft):
        path.unlink()
    return out


def main() -> None:
    args = parse()
    if args.scale:
        import scale

        scale.main(args)
        return
    import baseline
    import torch

    started = time.perf_counter()
    results: list[Result | str] = []
    with tempfile.TemporaryDirectory(prefix="clipsharp-gpu-") as tmp:
        root = Path(tmp)
        data = write_images(root / "images", args.images)
        decoded = baseline.decoded(str(data), 224, args.batch_size)
        for arch in args.archs.split(","):
            try:
                results += measure_arch(args, arch, root, data, decoded)
            except Exception as e:
                traceback.print_exc()
                results.append(f"{arch:<10} failed: {type(e).__name__}: {e}"[:300])
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"command: {command_line()}")
    print(f"device: {name}; torch {torch.__version__}; {args.images} images of 224 px, "
          f"{args.alphas} points, batch {args.batch_size}, {args.num_workers} workers; "
          f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")  # fmt: skip
    print(f"block images: {args.block_images or 'default (about 128 MiB)'}")
    print(f"{'':<24}{'image forwards/s':>24}{'seconds':>27}")
    print(f"{'arch':<10}{'dtype':<6}{'setup s':>8}{'clipsharp':>12}{'bare':>12}"
          f"{'clipsharp':>11}{'bare':>8}{'decode':>9}{'ratio':>8}")  # fmt: skip
    for result in results:
        print(result if isinstance(result, str) else result.line())
    print("ratio: clipsharp seconds / bare seconds. decode: one pass of clipsharp's image "
          "stream alone (DataLoader workers, no model); bare: forwards over images already "
          "on the device")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

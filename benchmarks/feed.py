"""The feed on the CPU (issue 22): prefetch against none, and the decoded cache at scale.

(1) Prefetch: ``interpolate`` (a small ViT at 224 px, random weights) over N ImageNet-sized
JPEGs (500x375, quality 90) in blocks of ``--block-images``, with ``--prefetch-blocks 0``
and 1; prints the seconds per block of each and their ratio (the numbers are checked to
be equal). (2) The cache: one pass of clipsharp's image stream decoding (no cache), one
filling ``--data-cache``, one reading it back; prints the size on disk per image, the
read and decode rates and the second run's time over the first's.

    .venv/bin/python benchmarks/feed.py                  # 512 images, ~2 min on 2 cores
    .venv/bin/python benchmarks/feed.py --images 2048
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from scale import write_jpegs
from synthetic import command_line, model_config, write_pair


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-images", type=int, default=128)
    parser.add_argument("--alphas", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=None, help="default: clipsharp's")
    parser.add_argument("--repeats", type=int, default=2, choices=(1, 2), help="best of")
    return parser.parse_args()


def interpolate_seconds(args, zs: Path, ft: Path, data: Path, prefetch: int) -> tuple:
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import open_workspace
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions

    data_options = DataOptions(num_workers=args.num_workers)
    evaluation = EvalOptions(
        "cpu", args.batch_size, "fp32", "simple", block_images=args.block_images,
        prefetch_blocks=prefetch,
    )  # fmt: skip
    ws = open_workspace(
        {"zero_shot": zs, "fine_tuned": ft}, [DatasetSpec.parse(str(data), role="ood")],
        data=data_options, evaluation=evaluation,
    )  # fmt: skip
    alphas = tuple(i / (args.alphas - 1) for i in range(args.alphas))
    start = time.perf_counter()
    report = run_interpolation(ws, RunOptions(data_options, evaluation, PathOptions(alphas)))
    return time.perf_counter() - start, report.results["path"], ws.datasets[0]


def stream_seconds(images, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in images.batches(range(len(images)), batch_size):
        pass
    return time.perf_counter() - start


def main() -> None:
    from dataclasses import replace

    args = parse()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clipsharp-feed-") as tmp:
        root = Path(tmp)
        data = write_jpegs(root / "jpegs", args.images)
        zs, ft = write_pair(model_config(None), root)
        times = {0: [], 1: []}
        paths = []
        for prefetch in (0, 1, 1, 0)[: 2 * args.repeats]:  # alternated: neither goes first
            seconds, path, dataset = interpolate_seconds(args, zs, ft, data, prefetch)
            times[prefetch].append(seconds)
            paths.append(path)
        assert all(p == paths[0] for p in paths), "prefetch changed the numbers"
        plain, ahead = min(times[0]), min(times[1])
        blocks = -(-args.images // args.block_images)
        images = replace(dataset.images, cache_dir=None)
        decode = stream_seconds(images, args.batch_size)
        cached = replace(images, cache_dir=root / "cache")
        fill = stream_seconds(cached, args.batch_size)
        read = stream_seconds(cached, args.batch_size)
        size = sum(p.stat().st_size for p in (root / "cache").iterdir())
    load = os.getloadavg()
    print(f"command: {command_line()}")
    print(f"{args.images} JPEGs 500x375 q90 -> 224 px; batch {args.batch_size}, blocks of "
          f"{args.block_images} ({blocks} blocks), {args.alphas} alphas, workers "
          f"{images.num_workers}; {os.cpu_count()} cores, load {load[0]:.1f}")  # fmt: skip
    print(f"interpolate: {plain / blocks:.2f} s per block without prefetch, "
          f"{ahead / blocks:.2f} s with one block ahead: ratio {ahead / plain:.2f} "
          f"(best of {args.repeats}, alternated; the same numbers)")  # fmt: skip
    mib = size / 2**20
    print(f"cache: {size / args.images / 1024:.1f} KiB per image ({mib:.0f} MiB in all; "
          f"57,500 images: {size / args.images * 57_500 / 2**30:.1f} GiB)")  # fmt: skip
    print(
        f"decode {args.images / decode:.0f} img/s; fill (decode + write) "
        f"{args.images / fill:.0f} img/s; read back {args.images / read:.0f} img/s "
        f"({mib / read:.0f} MiB/s, digests checked); second run / first {read / fill:.3f}"
    )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

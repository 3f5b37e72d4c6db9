"""Peak memory of ``clipsharp interpolate`` as the dataset grows (issue 10).

The same small 224-px model runs ``clipsharp interpolate`` on N1 and N2 random JPEGs
(save_to_disk folders made once in a temporary folder), each in a fresh process; its peak
RSS is read from wait4. Printed: MB per extra image = (RSS(N2) - RSS(N1)) / (N2 - N1),
target <= 0.05 (the preloading engine before issue 10: 0.58), and images per second.

    .venv/bin/python benchmarks/memory.py                     # about 2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/memory.py --images 400 8000 --num-workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from synthetic import (
    clipsharp_command,
    command_line,
    model_config,
    quiet_env,
    run_child,
    write_images,
    write_pair,
)

TARGET_MB_PER_IMAGE = 0.05


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs=2, default=(400, 4000), metavar=("N1", "N2"))
    parser.add_argument("--width", type=int, default=128, help="image-tower width")
    parser.add_argument("--layers", type=int, default=2, help="image-tower blocks")
    parser.add_argument("--alphas", default="0,0.5,1", help="as --alphas of interpolate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0, help="decoding processes")
    parser.add_argument("--block-images", type=int, default=None)
    return parser.parse_args()


def interpolate(args, zs: Path, ft: Path, data: Path, out: Path):
    """One ``clipsharp interpolate`` process: (child, report seconds)."""
    command = [
        *clipsharp_command(), "interpolate", str(zs), str(ft), "--ood", str(data),
        "--alphas", args.alphas, "--device", "cpu", "--templates", "simple",
        "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
        "-o", str(out), "--format", "json",
    ]  # fmt: skip
    if args.block_images:
        command += ["--block-images", str(args.block_images)]
    child = run_child(command, env=quiet_env())
    return child, json.loads(out.read_text())["timing"]["seconds"], " ".join(command[2:])


def main() -> None:
    args = parse()
    load = os.getloadavg()
    small, large = args.images
    with tempfile.TemporaryDirectory(prefix="clipsharp-memory-") as tmp:
        root = Path(tmp)
        zs, ft = write_pair(model_config(None, width=args.width, layers=args.layers), root)
        rows = []
        for count in (small, large):
            data = write_images(root / f"images-{count}", count)
            child, seconds, command = interpolate(args, zs, ft, data, root / f"r{count}.json")
            rows.append((count, child, seconds))
            (root / f"r{count}.json").unlink()
    points = len({0.0, 1.0} | {float(a) for a in args.alphas.split(",")})
    print(f"command: {command_line()}")
    print(f"load average before / after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"child:   {command}")
    print(f"model: ViT width {args.width}, {args.layers} blocks, patch 32, 224 px; "
          f"{points} points; batch {args.batch_size}; {args.num_workers} workers")  # fmt: skip
    print(f"{'images':>8}{'peak RSS MB':>13}{'anon MB':>9}{'file MB':>9}{'process s':>11}"
          f"{'analysis s':>12}{'images/s':>10}{'forwards/s':>12}")  # fmt: skip
    for count, child, seconds in rows:
        print(f"{count:>8}{child.peak_mb:>13.0f}{child.anon_mb:>9.0f}{child.file_mb:>9.0f}"
              f"{child.seconds:>11.1f}{seconds:>12.1f}{count / seconds:>10.0f}"
              f"{count * points / seconds:>12.0f}")  # fmt: skip
    extra = large - small
    per_image = (rows[1][1].peak_mb - rows[0][1].peak_mb) / extra
    anon = (rows[1][1].anon_mb - rows[0][1].anon_mb) / extra
    mapped = (rows[1][1].file_mb - rows[0][1].file_mb) / extra
    verdict = "met" if per_image <= TARGET_MB_PER_IMAGE else "MISSED"
    print(f"MB per extra image: {per_image:.4f} (target <= {TARGET_MB_PER_IMAGE}: {verdict}; "
          f"before issue 10: 0.58); of which anonymous {anon:.4f}, mapped files {mapped:.4f} "
          f"(sampled every 50 ms)")  # fmt: skip


if __name__ == "__main__":
    main()

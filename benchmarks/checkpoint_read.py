"""A checkpoint read into memory once and hashed as read, against a memory map (issue 23).

clipsharp reads a safetensors checkpoint whole into memory, hashing it as it goes, so the
sha256 a report gives is that of the bytes the run used (``core/checkpoint.py``). The
memory map it replaced hashed the file in a second pass and paged weights in as they were
used. Each side runs in its own process, reads the same file, and then uses every weight
once (a sum): seconds and peak RSS, as ratios now / memory map.

    .venv/bin/python benchmarks/checkpoint_read.py             # ~600 MB, ViT-B-32's size
    .venv/bin/python benchmarks/checkpoint_read.py --mb 64     # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from synthetic import PYTHON, command_line, quiet_env, run_child

SIDES = {
    "read into memory, hashed as read (now)": (
        "from clipsharp.core.checkpoint import load_checkpoint\n"
        "c = load_checkpoint(PATH); c.sha256\n"
        "print(sum(float(t.sum()) for t in c.tensors.values()))\n"
    ),
    "memory map, hashed apart (before)": (
        "from safetensors.torch import load_file\n"
        "from clipsharp.files import file_sha256\n"
        "file_sha256(PATH); tensors = load_file(PATH)\n"
        "print(sum(float(t.sum()) for t in tensors.values()))\n"
    ),
}


def write_checkpoint(path: Path, megabytes: int) -> None:
    import torch
    from safetensors.torch import save_file

    count = megabytes * 2**20 // 4 // 64  # 64 float32 tensors
    gen = torch.Generator().manual_seed(0)
    save_file({f"t{i}": torch.randn(count, generator=gen) for i in range(64)}, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=600, help="checkpoint size in MB")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ckpt.safetensors"
        write_checkpoint(path, args.mb)
        found = {}
        for name, code in SIDES.items():
            script = f"PATH = {str(path)!r}\n{code}"
            runs = [run_child([PYTHON, "-c", script], quiet_env()) for _ in range(args.repeats)]
            found[name] = (min(r.seconds for r in runs), min(r.peak_mb for r in runs))
            assert len({r.stdout for r in runs}) == 1
    print(f"command: {command_line()}")
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.mb} MB; best of {args.repeats}")
    (now, before) = found.values()
    for name, (seconds, peak) in found.items():
        print(f"{name:42} {seconds:6.2f} s {peak:8.0f} MB")
    print(f"ratio now / before: time {now[0] / before[0]:.2f}, peak RSS {now[1] / before[1]:.2f}")


if __name__ == "__main__":
    sys.exit(main())

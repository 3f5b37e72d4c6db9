"""ImageNet-scale datasets (issue 19): opening a wnid folder, and webdatasets' throughput.

(a) A synthetic wnid tree (ImageNet's first 100 wnids from timm, small JPEGs) of N1 and N2
    files: the time from ``run_interpolation`` to its first evaluated batch, and this
    process's peak RSS, each size after the other in one process (a 500-file warm-up first).
    Targets: time(N2) / time(N1) <= 2 (opening lists the files, it decodes none) and
    (RSS(N2) - RSS(N1)) / (N2 - N1) <= 0.05 MB per file.
(b) The same M JPEGs as an image folder and as a clip_benchmark webdataset (4 shards):
    images streamed per second through the model's transform, best of 3, alternating.
    Target: webdataset / folder >= 0.9 (within 10 %).

    .venv/bin/python benchmarks/imagenet_scale.py                 # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/imagenet_scale.py --files 5000 50000 --images 4000
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from synthetic import command_line, max_rss_mb, small_config, write_pair

TARGET_TIME_RATIO = 2.0
TARGET_MB_PER_FILE = 0.05
TARGET_THROUGHPUT = 0.9


class FirstBatch(Exception):
    """Raised from the progress callback when the first batch has been evaluated."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs=2, default=(5000, 50000), metavar=("N1", "N2"))
    parser.add_argument("--images", type=int, default=4000, help="(b): images per layout")
    parser.add_argument("--only", choices=("a", "b"), default=None)
    return parser.parse_args()


def jpegs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct smooth JPEGs of size x size (a colour ramp plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)[None, :, None]
    found = []
    for _ in range(count):
        pixels = ramp * rng.uniform(0.3, 1, 3) + rng.normal(0, 12, (size, size, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG")
        found.append(buffer.getvalue())
    return found


def wnid_tree(root: Path, files: int, images: list[bytes]) -> Path:
    """``files`` JPEGs in 100 wnid folders (ImageNet's first 100), named as ImageNet's val."""
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()[:100]
    for wnid in wnids:
        (root / wnid).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = root / wnids[i % 100] / f"ILSVRC2012_val_{i:08d}.JPEG"
        path.write_bytes(images[i % len(images)])
    return root


def time_to_first_batch(zs: Path, ft: Path, tree: Path) -> float:
    """Seconds from the library call to its first evaluated batch (checkpoints read, model
    built, dataset opened and the zero-shot head encoded on the way)."""
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions

    options = RunOptions(
        DataOptions(num_workers=0),
        EvalOptions(device="cpu", templates="simple", batch_size=64),
        PathOptions(alphas=(0.0, 1.0)),
    )
    inputs = Inputs({"zero_shot": zs, "fine_tuned": ft}, (DatasetSpec.parse(str(tree), "ood"),))

    def progress(event) -> None:
        if event.task == "interpolate" and event.done > 0:
            raise FirstBatch

    start = time.perf_counter()
    try:
        run_interpolation(inputs, options, progress=progress)
    except FirstBatch:
        return time.perf_counter() - start
    raise RuntimeError("the run ended before its first batch was reported")


def opening(args, root: Path, zs: Path, ft: Path) -> None:
    images = jpegs(200, 48)
    small, large = args.files
    rows = []
    for files in (500, small, large):
        tree = wnid_tree(root / f"tree-{files}", files, images)
        gc.collect()
        seconds = time_to_first_batch(zs, ft, tree)
        rows.append((files, seconds, max_rss_mb()))
        rss = rows[-1][2]
        print(f"  {files:>6} files: first batch after {seconds:6.2f} s, peak RSS {rss:.0f} MB")
    (_, t1, r1), (_, t2, r2) = rows[1], rows[2]
    ratio, per_file = t2 / t1, (r2 - r1) / (large - small)
    verdict = {True: "met", False: "MISSED"}
    print(f"(a) time to first batch {large} / {small} files: {ratio:.2f}  (target <= "
          f"{TARGET_TIME_RATIO:g}: {verdict[ratio <= TARGET_TIME_RATIO]})")  # fmt: skip
    print(f"(a) peak RSS growth: {per_file:.4f} MB per file  (target <= {TARGET_MB_PER_FILE}: "
          f"{verdict[per_file <= TARGET_MB_PER_FILE]})")  # fmt: skip


def webdataset_copy(root: Path, folder: Path, shards: int = 4) -> Path:
    """The image folder's files as clip_benchmark's layout: test/{0..3}.tar, classnames.txt."""
    files = sorted(folder.glob("*/*"))
    classes = sorted({f.parent.name for f in files})
    (root / "test").mkdir(parents=True)
    per = -(-len(files) // shards)
    for s in range(shards):
        with tarfile.open(root / "test" / f"{s}.tar", "w") as tar:
            for i, path in enumerate(files[s * per : (s + 1) * per], start=s * per):
                label = str(classes.index(path.parent.name)).encode()
                for name, data in ((f"s{i:07d}.jpg", path.read_bytes()), (f"s{i:07d}.cls", label)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    return root


def images_per_second(source: Path, transform) -> float:
    from clipsharp.data.load import load_eval_data
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions

    data = load_eval_data(DatasetSpec.parse(str(source), "ood"), transform, DataOptions())
    start = time.perf_counter()
    count = sum(len(batch) for batch in data.images.batches(range(data.num_examples), 128))
    return count / (time.perf_counter() - start)


def throughput(args, root: Path) -> None:
    import open_clip

    folder = wnid_tree(root / "folder", args.images, jpegs(args.images, 160, seed=1))
    shards = webdataset_copy(root / "wds", folder)
    transform = open_clip.image_transform(224, is_train=False)
    best = {"folder": 0.0, "webdataset": 0.0}
    for _ in range(3):
        for name, source in (("folder", folder), ("webdataset", shards)):
            best[name] = max(best[name], images_per_second(source, transform))
    ratio = best["webdataset"] / best["folder"]
    print(f"  image folder {best['folder']:.0f} images/s, webdataset {best['webdataset']:.0f} "
          f"images/s ({args.images} images of 160 px, 224-px transform, best of 3)")  # fmt: skip
    print(f"(b) webdataset / image folder throughput: {ratio:.3f}  (target >= "
          f"{TARGET_THROUGHPUT}: {'met' if ratio >= TARGET_THROUGHPUT else 'MISSED'})")  # fmt: skip


def main() -> None:
    args = parse()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    print(command_line(), f"(load average {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zs, ft = write_pair(small_config(), root)
        if args.only in (None, "a"):
            opening(args, root, zs, ft)
        if args.only in (None, "b"):
            throughput(args, root)


if __name__ == "__main__":
    main()

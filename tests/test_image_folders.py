"""Image folders at ImageNet scale (issue 19 item 6, issue 23 items 4, 13, 15): listed, not
decoded; fingerprinted by every file's path, size, mtime and ctime; a bad image named by its
file, or left out and counted with --skip-bad-images; an empty class folder said."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CLASSNAMES, coloured_images, invoke, pair_args, run_options, succeeds
from test_webdataset import plain_loop, zero_shot_state

from clipsharp.data.folders import list_image_folder
from clipsharp.data.load import load_eval_data
from clipsharp.data.specs import DatasetSpec
from clipsharp.options import DataOptions

NAMES = sorted(CLASSNAMES)  # the class folders' names, as their ClassLabel orders them


def write_folder(root: Path, n: int, seed: int, name="img_{i:03d}.jpg") -> Path:
    """n coloured JPEGs in ``root/<colour>/``."""
    images, labels = coloured_images(n, seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSNAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / name.format(i=i), quality=90)
    return root


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def load(root, split=None, **options):
    spec = DatasetSpec.parse(f"{root}:{split}" if split else str(root), "ood")
    return load_eval_data(spec, lambda image: torch.zeros(3, 4, 4), DataOptions(**options))


def images_in_order(root: Path, skip=()) -> tuple[list, list[int]]:
    """The folder's images and labels in path order, read with PIL (no clipsharp)."""
    from PIL import Image

    files = sorted(p for p in root.glob("*/*") if p not in skip)
    return [Image.open(p).convert("RGB") for p in files], [
        NAMES.index(p.parent.name) for p in files
    ]


@pytest.mark.parametrize(
    "layout", ["class folders", "split folders", "ImageNet val names", "mixed extensions"]
)
def test_listing_gives_what_datasets_imagefolder_gives(tmp_path, layout):
    import datasets

    root = tmp_path / "folder"
    if layout == "split folders":
        write_folder(root / "train", 8, seed=1)
        write_folder(root / "test", 6, seed=2)
    elif layout == "ImageNet val names":
        write_folder(root, 8, seed=1, name="ILSVRC2012_val_{i:08d}.JPEG")
    else:
        write_folder(root, 8, seed=1, name="x{i}.jpg" if layout == "class folders" else "x{i}.PNG")
    listed = list_image_folder(root.resolve())
    theirs = datasets.load_dataset(str(root.resolve()))
    assert sorted(listed.splits) == sorted(theirs)
    for split, rows in theirs.items():
        ours = load(root, split)
        raw = rows.cast_column("image", datasets.Image(decode=False))
        assert ours.classnames == rows.features["label"].names
        assert ours.labels.tolist() == rows["label"]
        assert ours.images.dataset["image"] == raw["image"]  # the same files, in order


def test_a_replaced_image_with_its_mtime_set_back_is_not_served_from_the_cache(tmp_path):
    """Issue 23 item 4: other bytes, mtime set back (touch -r): the ctime still moves."""
    from PIL import Image

    root = write_folder(tmp_path / "folder", 8, seed=1)
    cache = tmp_path / "cache"
    transform = _crop()
    first = load_eval_data(DatasetSpec.parse(str(root), "ood"), transform,
                           DataOptions(cache_dir=cache, num_workers=0))  # fmt: skip
    before = torch.cat(list(first.images.batches(range(8), 4)))  # written to the cache
    victim = sorted(root.glob("red/*"))[0]
    stat = victim.stat()
    Image.new("RGB", (48, 40), (0, 250, 0)).save(victim, quality=70)  # other bytes and size
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r the old file
    assert victim.stat().st_mtime_ns == stat.st_mtime_ns
    again = load_eval_data(DatasetSpec.parse(str(root), "ood"), transform,
                           DataOptions(cache_dir=cache, num_workers=0))  # fmt: skip
    assert again.fingerprint != first.fingerprint
    after = torch.cat(list(again.images.batches(range(8), 4)))
    uncached = load_eval_data(DatasetSpec.parse(str(root), "ood"), transform, DataOptions())
    assert torch.equal(after, torch.cat(list(uncached.images.batches(range(8), 4))))
    changed = [i for i in range(8) if not torch.equal(before[i], after[i])]
    assert changed == [sorted(root.glob("*/*")).index(victim)]


def _crop():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16),
                               transforms.PILToTensor()])  # fmt: skip


@pytest.mark.parametrize("layout", ["listed", "read by load_dataset"])
def test_a_folder_fingerprint_covers_every_file_stat(tmp_path, layout):
    """Also for a layout clipsharp leaves to load_dataset (here: a text file beside)."""
    root = write_folder(tmp_path / "folder", 8, seed=1)
    if layout != "listed":
        (root / "red" / "notes.txt").write_text("not an image\n")
        assert list_image_folder(root.resolve()) is None
    first = load(root).fingerprint
    victim = sorted(root.glob("red/*.jpg"))[0]
    stat = victim.stat()
    victim.write_bytes(sorted(root.glob("blue/*.jpg"))[0].read_bytes())
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load(root).fingerprint != first


def test_the_fingerprint_covers_size_mtime_and_ctime_of_every_file(tmp_path):
    from clipsharp.data.folders import fingerprint

    root = write_folder(tmp_path / "folder", 4, seed=1)
    paths = sorted(str(p) for p in root.glob("*/*"))
    first = fingerprint(paths, root)
    assert fingerprint(paths, root) == first
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # mtime only
    assert fingerprint(paths, root) != first
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))  # back: the ctime moved on
    assert fingerprint(paths, root) != first


def test_a_truncated_jpeg_exits_2_naming_the_file(pair, tmp_path):
    root = write_folder(tmp_path / "folder", 12, seed=4)
    bad = truncate(sorted(root.glob("green/*"))[1])
    result = invoke("interpolate", *pair_args(pair, "--ood", root, "--alphas", "0"))
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and line.startswith("clipsharp interpolate: error:")
    assert f"image file {bad.resolve()}" in line and "truncated" in line and "row" not in line


def test_skip_bad_images_leaves_them_out_counted(pair, tmp_path):
    root = write_folder(tmp_path / "folder", 12, seed=4)
    bad = [truncate(sorted(root.glob("green/*"))[1]), truncate(sorted(root.glob("red/*"))[0])]
    (sorted(root.glob("blue/*"))[0]).write_bytes(b"not an image at all")
    bad.append(sorted(root.glob("blue/*"))[0])
    report = tmp_path / "r.json"
    args = pair_args(pair, "--ood", root, "--alphas", "0,1", "--skip-bad-images", "-o", report)
    result = succeeds("interpolate", *args)
    assert "3 images cannot be read and are left out (--skip-bad-images)" in result.stderr
    doc = json.loads(report.read_text())
    entry = next(d for d in doc["inputs"]["datasets"] if d["name"] == "folder")
    assert entry["num_examples"] == 9 and entry["skipped_images"]["count"] == 3
    assert all(str(p.resolve()) in " ".join(entry["skipped_images"]["first"]) for p in bad)
    images, labels = images_in_order(root, skip=bad)
    accuracy, loss = plain_loop(zero_shot_state(pair), images, labels, _openai(), NAMES)
    metrics = next(p for p in doc["results"]["path"] if p["alpha"] == 0)["metrics"]["folder"]
    assert metrics["num_examples"] == 9 and metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)


def _openai():
    import open_clip

    return list(open_clip.OPENAI_IMAGENET_TEMPLATES)


def test_skip_bad_images_resumes_and_shards_over_the_images_kept(pair, tmp_path):
    """The skip is decided when the dataset opens, the same on every rank and every run:
    labels stay aligned with images, and a resumed run gives the uninterrupted numbers."""
    from dataclasses import replace

    from conftest import workspace

    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.engine import evaluate

    root = write_folder(tmp_path / "folder", 16, seed=4)
    bad = truncate(sorted(root.glob("yellow/*"))[0])
    opened = load(root, skip_bad_images=True, num_workers=0)
    assert opened.num_examples == 15 and opened.labels.tolist() == images_in_order(root, [bad])[1]
    options = run_options((0.0, 1.0), batch_size=2, block_images=4)
    options = replace(options, data=replace(options.data, skip_bad_images=True))
    ws = workspace(pair, options, datasets=[(root, "ood")])
    journal = tmp_path / "report.json.partial"

    class Stop(Exception):
        pass

    def stop_after_two_blocks(event):
        if event.done == 2 * 4 * 2:
            raise Stop

    with pytest.raises(Stop):
        run_interpolation(ws, options, journal=journal, progress=stop_after_two_blocks)
    resumed = run_interpolation(ws, options, journal=journal, resume=True)
    whole = run_interpolation(ws, options)
    assert resumed.results == whole.results and resumed.summary == whole.summary
    data = ws.datasets[0]  # three ranks' shards of the 15 images kept add up to the whole
    total = evaluate(ws.classifier, ws.heads, data, batch_size=4)
    parts = [evaluate(ws.classifier, ws.heads, data, 4, rank=r, world_size=3) for r in range(3)]
    assert sum(p.count for p in parts) == total.count == 15
    assert sum(p.correct for p in parts) == total.correct
    assert sum(p.loss_sum for p in parts) == pytest.approx(total.loss_sum, rel=1e-6)


def test_an_empty_class_folder_is_said(pair, tmp_path):
    root = write_folder(tmp_path / "folder", 8, seed=1)
    (root / "purple").mkdir()
    report = tmp_path / "r.json"
    result = succeeds("interpolate", *pair_args(pair, "--ood", root, "--alphas", "0", "-o", report))
    note = "class folder 'purple' holds no images and is left out: 4 classes, not 5"
    assert note in " ".join(result.stderr.split())
    entry = next(d for d in json.loads(report.read_text())["inputs"]["datasets"]
                 if d["name"] == "folder")  # fmt: skip
    assert entry["notes"] == [note] and entry["num_classes"] == 4


def test_a_file_name_that_is_not_utf8_is_named(pair, tmp_path):
    root = write_folder(tmp_path / "folder", 8, seed=1)
    first = sorted(root.glob("red/*"))[0]
    os.rename(first, os.path.join(os.fsencode(first.parent), b"caf\xe9.jpg"))
    result = invoke("interpolate", *pair_args(pair, "--ood", root, "--alphas", "0"))
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and "DatasetGenerationError" not in line
    assert "red/caf\\xe9.jpg" in line and "not valid UTF-8" in line


def test_opening_lists_and_never_decodes(tmp_path, monkeypatch):
    """Opening a folder reads no image: PIL is never asked to open one."""
    from PIL import Image

    root = write_folder(tmp_path / "folder", 8, seed=1)
    labels = images_in_order(root)[1]
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or 1 / 0)
    loaded = load(root)
    assert opened == []
    assert loaded.num_examples == 8 and loaded.labels.tolist() == labels

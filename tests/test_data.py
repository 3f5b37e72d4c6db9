"""clipsharp.data on small real datasets made here: save_to_disk folders, image folders, parquet.

Expected pixels and labels are computed from the numpy arrays the fixtures wrote, not by
reading the datasets back through clipsharp.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Counting
from PIL import Image
from torchvision import transforms

from clipsharp.data.load import EvalData, load_all, load_eval_data, read_classnames
from clipsharp.data.specs import DatasetSpec, unique_names
from clipsharp.errors import ConfigError, DatasetError
from clipsharp.options import DataOptions

NAMES = ["ant", "bee", "cat"]
TO_TENSOR = transforms.ToTensor()  # exact: pixels / 255


@pytest.fixture(scope="module", autouse=True)
def offline_cache(tmp_path_factory):
    """Guard: no hub traffic and a private datasets cache, whatever the environment says."""
    import datasets
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        cache = tmp_path_factory.mktemp("hf-datasets-cache")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        yield


def arrays(n: int, seed: int, shape=(12, 12, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def expected(pixels: np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] straight from the array; grayscale repeated, alpha dropped."""
    rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., :3]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def assert_images(images: torch.Tensor, pixels: list[np.ndarray]) -> None:
    assert images.dtype == torch.float32 and images.shape == (len(pixels), 3, 12, 12)
    torch.testing.assert_close(
        images, torch.stack([expected(p) for p in pixels]), atol=1e-6, rtol=0
    )


def features(label=None, images=("image",)):
    import datasets

    label = label or datasets.ClassLabel(names=NAMES)
    return datasets.Features({**{name: datasets.Image() for name in images}, "label": label})


def make_dataset(pixels: list[np.ndarray], labels: list, **kwargs):
    import datasets

    columns = {
        name: [Image.fromarray(p) for p in pixels] for name in kwargs.get("images", ["image"])
    }
    return datasets.Dataset.from_dict({**columns, "label": labels}, features=features(**kwargs))


def save_splits(path: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    import datasets

    splits = {}
    for k, (split, n) in enumerate(sizes.items()):
        splits[split] = make_dataset(arrays(n, seed + k), [i % 3 for i in range(n)])
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def spec(source, split: str | None = None, role: str = "ood") -> DatasetSpec:
    text = f"{source}:{split}" if split else str(source)
    return DatasetSpec.parse(text, role)


def load(source, split=None, transform=TO_TENSOR, **options) -> EvalData:
    return load_eval_data(spec(source, split), transform, DataOptions(**options))


@dataclass(frozen=True)
class Saved:
    path: Path
    test: list[np.ndarray]  # pixels of the "test" split, in row order
    train: list[np.ndarray]


@pytest.fixture(scope="session")
def saved(tmp_path_factory) -> Saved:
    """DatasetDict save_to_disk folder: train (6) and test (24), Image + ClassLabel."""
    path = save_splits(tmp_path_factory.mktemp("saved") / "shifted", {"train": 6, "test": 24})
    return Saved(path, test=arrays(24, 1), train=arrays(6, 0))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[int]]:
    """root/{ant,bee,cat}/*.png, 4 each; ant/3.png grayscale, bee/3.png RGBA, cat/3.jpg..."""
    root = tmp_path_factory.mktemp("folder") / "photos"
    pixels, labels = [], []
    for label, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for i, array in enumerate(arrays(4, 10 + label)):
            if i == 3 and name == "ant":
                array = array[..., 0]  # mode L
            if i == 3 and name == "bee":
                array = np.concatenate([array, np.full((12, 12, 1), 7, np.uint8)], axis=2)
            Image.fromarray(array).save(root / name / f"{i}.png")
            pixels.append(array)
            labels.append(label)
    return root, pixels, labels


@pytest.fixture(scope="session")
def parquet(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[int]]:
    """A parquet file of Image + plain int64 labels (no ClassLabel), and two classnames files."""
    import datasets

    root = tmp_path_factory.mktemp("parquet")
    pixels, labels = arrays(24, 20), [(i * 7) % 3 for i in range(24)]
    make_dataset(pixels, labels, label=datasets.Value("int64")).to_parquet(root / "rot.parquet")
    (root / "names.txt").write_text("ant\n\nbee\ncat\n")
    (root / "names.json").write_text(json.dumps(NAMES))
    return root / "rot.parquet", pixels, labels


def match_rows(images: torch.Tensor, pixels: list[np.ndarray]) -> list[int]:
    """For each loaded image, the index of the fixture array it equals."""
    wanted = [expected(p) for p in pixels]
    return [next(j for j, w in enumerate(wanted) if torch.allclose(img, w)) for img in images]


# ---- specs and names -------------------------------------------------------------------------


def test_parse_splits_at_last_colon_unless_the_path_has_it(tmp_path):
    assert spec("data/shifted", "test").source == "data/shifted"
    parsed = DatasetSpec.parse("timm/mini-imagenet:validation", "id")
    assert (parsed.source, parsed.split, parsed.role) == ("timm/mini-imagenet", "validation", "id")
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert (
        DatasetSpec.parse(str(odd), "ood").source,
        DatasetSpec.parse(str(odd), "ood").split,
    ) == (
        str(odd),
        None,
    )
    assert DatasetSpec.parse(f"{odd}:test", "ood").split == "test"
    assert DatasetSpec.parse(f"{odd}:test", "ood").source == str(odd)
    with pytest.raises(DatasetError, match="names no split"):
        DatasetSpec.parse("data/shifted:", "ood")
    with pytest.raises(DatasetError, match="role 'both'"):
        DatasetSpec.parse("data/shifted", "both")


def test_unique_names_disambiguates_same_stem(tmp_path):
    specs = [spec("a/shifted"), spec("b/shifted.parquet"), spec("c/other"), spec("user/shifted")]
    assert unique_names(specs) == ["shifted", "shifted-2", "other", "shifted-3"]
    by_split = [spec("a/shifted", "test"), spec("a/shifted", "validation")]
    assert unique_names(by_split) == ["shifted:test", "shifted:validation"]
    assert unique_names([spec("x"), spec("x-2"), spec("y/x")]) == ["x", "x-2", "x-3"]
    assert unique_names([spec(tmp_path / "d" / "*.parquet")]) == ["d"]


# ---- save_to_disk ----------------------------------------------------------------------------


def test_save_to_disk_prefers_test_split_with_exact_pixels_and_labels(saved):
    loaded = load(saved.path)
    assert loaded.split == "test" and loaded.name == "shifted"
    assert_images(loaded.load_images(), saved.test)
    assert loaded.labels.tolist() == [i % 3 for i in range(24)]
    assert loaded.labels.dtype == torch.int64 and loaded.classnames == NAMES
    assert loaded.describe() == {
        "name": "shifted",
        "spec": str(saved.path),
        "role": "ood",
        "split": "test",
        "num_examples": 24,
        "num_classes": 3,
        "fingerprint": loaded.fingerprint,
        "class_names": "dataset (ClassLabel names)",
        "classes": NAMES,
        "classes_digest": hashlib.sha256(json.dumps(NAMES).encode()).hexdigest()[:16],
        "decoder": "pil",
    }


def test_explicit_split(saved):
    loaded = load(saved.path, "train")
    assert loaded.split == "train" and loaded.num_examples == 6
    assert_images(loaded.load_images(), saved.train)
    with pytest.raises(DatasetError, match="no split 'dev'; its splits are test, train"):
        load(saved.path, "dev")


@pytest.mark.parametrize(
    ("splits", "chosen"),
    [
        (["validation"], "validation"),
        (["train", "validation"], "validation"),
        (["a", "test"], "test"),
        (["validation", "train", "test"], "test"),
    ],
)
def test_split_choice(tmp_path, splits, chosen):
    path = save_splits(tmp_path / "d", dict.fromkeys(splits, 3))
    loaded = load(path)
    assert loaded.split == chosen
    assert_images(loaded.load_images(), arrays(3, splits.index(chosen)))


def test_no_preferred_split_lists_splits(tmp_path):
    path = save_splits(tmp_path / "d", {"train": 3, "extra": 3})
    with pytest.raises(DatasetError, match=r"splits extra, train, none test or validation"):
        load(path)


def test_empty_dataset_is_an_error(tmp_path):
    import datasets

    one = make_dataset(arrays(1, 0), [0])
    datasets.DatasetDict(test=one.filter(lambda row: False)).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetError, match="split 'test' has no examples"):
        load(tmp_path / "d")
    one.select([]).to_parquet(tmp_path / "empty.parquet")  # datasets itself refuses this one
    with pytest.raises(DatasetError, match="empty.parquet': cannot be read"):
        load(tmp_path / "empty.parquet")


def test_classnames_fewer_than_the_classes_are_an_error(tmp_path):
    path = save_splits(tmp_path / "d", {"test": 3})  # labels 0, 1, 2
    (tmp_path / "two.txt").write_text("ant\nbee\n")
    with pytest.raises(DatasetError, match=r"two.txt lists 2 names but the dataset has 3 classes"):
        load(path, classnames=tmp_path / "two.txt")


# ---- columns ---------------------------------------------------------------------------------


def test_two_image_columns_need_the_flag(tmp_path):
    import datasets

    left, right = arrays(4, 30), arrays(4, 31)
    table = make_dataset(left, [0, 1, 2, 0], images=["left", "right"])
    table = table.cast_column("right", datasets.Image())
    table = table.map(lambda row, i: {"right": Image.fromarray(right[i])}, with_indices=True)
    table.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(
        DatasetError, match=r"several Image columns \(left, right\).*--image-column"
    ):
        load(tmp_path / "two")
    assert_images(load(tmp_path / "two", image_column="right").load_images(), right)
    assert_images(load(tmp_path / "two", image_column="left").load_images(), left)
    with pytest.raises(DatasetError, match="no column 'pic' .*columns are left, right, label"):
        load(tmp_path / "two", image_column="pic")
    with pytest.raises(DatasetError, match="no column 'y' \\(--label-column\\)"):
        load(tmp_path / "two", image_column="left", label_column="y")


def test_string_labels_and_image_paths_from_csv(tmp_path):
    pixels = arrays(5, 40)
    (tmp_path / "img").mkdir()
    rows = ["file,kind"]
    kinds = ["zebra", "ant", "zebra", "moth", "ant"]
    for i, (array, kind) in enumerate(zip(pixels, kinds, strict=True)):
        Image.fromarray(array).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{kind}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    loaded = load(tmp_path / "list.csv", image_column="file", label_column="kind")
    assert loaded.split == "train" and loaded.name == "list"
    assert loaded.classnames == ["ant", "moth", "zebra"]
    assert loaded.labels.tolist() == [2, 0, 2, 1, 0]
    assert_images(loaded.load_images(), pixels)
    (tmp_path / "order.txt").write_text("zebra\nmoth\nant\n")
    ordered = load(
        tmp_path / "list.csv",
        image_column="file",
        label_column="kind",
        classnames=tmp_path / "order.txt",
    )
    assert ordered.labels.tolist() == [0, 2, 0, 1, 2]


# ---- image folders ---------------------------------------------------------------------------


def test_image_folder_classes_modes_and_pixels(image_folder):
    root, pixels, labels = image_folder
    loaded = load(root)
    assert loaded.classnames == NAMES and loaded.num_examples == 12
    assert loaded.load_images().shape == (12, 3, 12, 12)  # grayscale and RGBA became 3 channels
    rows = match_rows(loaded.load_images(), pixels)
    assert sorted(rows) == list(range(12))
    assert loaded.labels.tolist() == [labels[j] for j in rows]


def test_image_folder_with_split_subfolders(tmp_path):
    for split, n in (("train", 2), ("test", 3)):
        for name in NAMES[:2]:
            (tmp_path / "root" / split / name).mkdir(parents=True)
            for i, array in enumerate(arrays(n, 50)):
                Image.fromarray(array).save(tmp_path / "root" / split / name / f"{i}.png")
    loaded = load(tmp_path / "root")
    assert (loaded.split, loaded.num_examples, loaded.classnames) == ("test", 6, NAMES[:2])
    assert sorted(loaded.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert load(tmp_path / "root", "train").num_examples == 4


def test_unreadable_image_names_the_file(tmp_path, image_folder):
    root = tmp_path / "broken"
    for name in NAMES[:2]:
        (root / name).mkdir(parents=True)
        Image.fromarray(arrays(1, 60)[0]).save(root / name / "ok.png")
    (root / "bee" / "bad.png").write_bytes(b"not a png at all")
    broken = load(root)  # opening reads the labels; the images are decoded when streamed
    with pytest.raises(DatasetError, match=r"cannot read image file .*bee/bad\.png \(.*Error"):
        broken.load_images()


def test_resizing_transform_streams_in_batches(image_folder):
    root, pixels, _ = image_folder
    transform = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), TO_TENSOR])
    loaded = load_eval_data(spec(root), transform, DataOptions())
    batches = list(loaded.images.batches(range(12), 5))
    assert [b.shape for b in batches] == [(5, 3, 16, 16)] * 2 + [(2, 3, 16, 16)]
    assert all(b.dtype == torch.uint8 for b in batches)  # workers hand over uint8 crops
    want = [transform(Image.fromarray(p).convert("RGB")) for p in pixels]
    for image in loaded.load_images():
        assert image.shape == (3, 16, 16)
        assert any(torch.allclose(image, w) for w in want)


def test_open_clip_transform_split_equals_the_whole_transform(image_folder):
    """uint8 crops in the workers, / 255 and Normalize on the device: the same numbers."""
    import open_clip

    root, pixels, _ = image_folder
    transform = open_clip.image_transform(8, is_train=False)
    loaded = load_eval_data(spec(root), transform, DataOptions())
    normalize = transform.transforms[-1]
    assert loaded.images.transform.mean == tuple(normalize.mean)  # split at its Normalize
    whole = torch.stack([transform(Image.fromarray(p).convert("RGB")) for p in pixels])
    streamed = loaded.load_images(batch_size=5)
    assert torch.equal(streamed[match_order(streamed, whole)], whole)


def match_order(images: torch.Tensor, wanted: torch.Tensor) -> list[int]:
    """For each wanted image, the index of the equal image among ``images``."""
    return [next(i for i, img in enumerate(images) if torch.equal(img, w)) for w in wanted]


def test_workers_give_the_same_tensors(image_folder):
    root, _, _ = image_folder
    serial, parallel = load(root), load(root, num_workers=2)
    assert torch.equal(serial.load_images(), parallel.load_images())
    assert torch.equal(serial.labels, parallel.labels)


# ---- parquet and class names -----------------------------------------------------------------


@pytest.mark.parametrize("names_file", ["names.txt", "names.json"])
def test_parquet_with_classnames_file(parquet, names_file):
    path, pixels, labels = parquet
    loaded = load(path, classnames=path.parent / names_file)
    assert (loaded.split, loaded.name, loaded.classnames) == ("train", "rot", NAMES)
    assert loaded.labels.tolist() == labels
    assert_images(loaded.load_images(), pixels)


def test_integer_labels_need_classnames(parquet):
    with pytest.raises(DatasetError, match="integer labels in 'label'.*--classnames"):
        load(parquet[0])


def test_parquet_glob(parquet):
    path, pixels, labels = parquet
    loaded = load(path.parent / "*.parquet", classnames=path.parent / "names.txt")
    assert loaded.labels.tolist() == labels and loaded.name == path.parent.name
    with pytest.raises(DatasetError, match="matches no files"):
        load(path.parent / "*.nothing")


def test_corrupt_parquet_is_a_dataset_error(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match="bad.parquet': cannot be read: ArrowInvalid"):
        load(tmp_path / "bad.parquet")


def test_read_classnames(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeff cat \n\n dog\n")
    assert read_classnames(tmp_path / "a.txt") == ["cat", "dog"]
    (tmp_path / "b.json").write_text('["a cat", "a dog"]')
    assert read_classnames(tmp_path / "b.json") == ["a cat", "a dog"]
    for name, text, message in [
        ("c.json", '["a", 1]', "JSON list of strings"),
        ("d.txt", "cat\ncat\n", "repeats 'cat'"),
        ("e.txt", "\n\n", "no class names"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_classnames(tmp_path / name)
    with pytest.raises(DatasetError, match="missing.txt cannot be read"):
        read_classnames(tmp_path / "missing.txt")


# ---- limit and fingerprint -------------------------------------------------------------------


def test_limit_is_a_seeded_sorted_subset(saved):
    first, again = load(saved.path, limit=5, seed=3), load(saved.path, limit=5, seed=3)
    other = load(saved.path, limit=5, seed=4)
    rows = match_rows(first.load_images(), saved.test)
    assert rows == sorted(np.random.default_rng(3).permutation(24)[:5].tolist())
    assert first.labels.tolist() == [j % 3 for j in rows]
    assert torch.equal(first.load_images(), again.load_images())
    assert match_rows(other.load_images(), saved.test) != rows
    assert load(saved.path, limit=100).num_examples == 24
    with pytest.raises(ConfigError, match="--limit must be a positive"):
        load(saved.path, limit=0)


def test_fingerprint_is_stable_and_tracks_inputs(saved, tmp_path):
    base = load(saved.path, limit=5).fingerprint
    assert re.fullmatch(r"[0-9a-f]{16}", base), base  # 16 hex digits
    assert load(saved.path, limit=5).fingerprint == base
    moved = shutil.copytree(saved.path, tmp_path / "elsewhere" / "shifted")
    assert load(moved, limit=5).fingerprint == base  # the content, not where it lies
    other_pixels = save_splits(tmp_path / "other", {"train": 6, "test": 24}, seed=5)
    resized = transforms.Compose([transforms.Resize(14), TO_TENSOR])
    others = {
        load(saved.path, limit=6).fingerprint,
        load(saved.path, limit=5, seed=1).fingerprint,
        load(saved.path, "train", limit=5).fingerprint,
        load(saved.path, limit=5, transform=resized).fingerprint,
        load(other_pixels, limit=5).fingerprint,
    }
    assert base not in others and len(others) == 5


# ---- missing sources and the hub -------------------------------------------------------------


def test_missing_local_paths_fail_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for source in ("data/nope", "./nope", str(tmp_path / "nope.parquet"), "~/clipsharp-nope"):
        with pytest.raises(DatasetError, match=re.escape(f"{source} does not exist")):
            load(source)


def test_hub_name_offline_is_a_dataset_error_quickly():
    start = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        load("clipsharp-test/no-such-dataset", "test")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "'clipsharp-test/no-such-dataset' is not a local path" in message
    assert "HF_HUB_OFFLINE=1" in message and "run once online to cache it" in message


def test_load_all_loads_each_once_and_names_uniquely(saved, tmp_path):
    specs = [spec(saved.path, "test", "id"), spec(saved.path, "test"), spec(saved.path, "train")]
    loaded = load_all(specs, TO_TENSOR, DataOptions())
    assert [d.name for d in loaded] == ["shifted:test", "shifted:test-2", "shifted:train"]
    assert [d.spec.role for d in loaded] == ["id", "ood", "ood"]
    # one opening per (source, split): the twin holds the very images and labels of the first
    assert loaded[0].images is loaded[1].images and loaded[0].labels is loaded[1].labels
    assert loaded[2].images is not loaded[0].images
    assert [d.split for d in loaded] == ["test", "test", "train"]
    with pytest.raises(DatasetError, match="nope does not exist"):
        load_all([specs[0], spec(tmp_path / "nope")], TO_TENSOR, DataOptions())


def test_data_cache_skips_decoding_and_gives_the_same_tensors(saved, tmp_path):
    cache, counting = tmp_path / "cache", Counting()
    transform = transforms.Compose([counting, TO_TENSOR])
    first = load(saved.path, limit=7, cache_dir=cache, transform=transform)
    images = first.load_images()
    entry = cache / f"{first.fingerprint}-0-7.npy"
    assert sorted(f.name for f in cache.iterdir()) == [entry.name, f"{entry.stem}.rows.npy"]
    assert counting.calls == 7
    again = load(saved.path, limit=7, cache_dir=cache, transform=transform)
    assert torch.equal(again.load_images(), images) and torch.equal(again.labels, first.labels)
    assert counting.calls == 7  # read from the cache, nothing decoded
    load(saved.path, limit=8, cache_dir=cache, transform=transform).load_images()
    assert counting.calls == 7 + 8  # another subset: another fingerprint
    entry.write_bytes(b"not an array file")  # an unreadable entry is made again
    repaired = load(saved.path, limit=7, cache_dir=cache, transform=transform)
    assert torch.equal(repaired.load_images(), images) and counting.calls == 7 + 8 + 7


def test_a_damaged_data_cache_row_is_refused_then_rebuilt(saved, tmp_path):
    cache = tmp_path / "cache"
    first = load(saved.path, limit=5, cache_dir=cache)
    images = first.load_images()
    entry = cache / f"{first.fingerprint}-0-5.npy"
    raw = bytearray(entry.read_bytes())
    raw[-10] ^= 0xFF  # one pixel of the last row, the header intact
    entry.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"entry .* is damaged \(row 4 .*run again to rebuild"):
        load(saved.path, limit=5, cache_dir=cache).load_images()
    assert not entry.exists()  # removed, never used
    assert torch.equal(load(saved.path, limit=5, cache_dir=cache).load_images(), images)
    assert entry.exists()


def test_an_image_folder_of_one_class_says_what_an_image_folder_needs(tmp_path):
    for i, pixels in enumerate(arrays(3, 70)):
        (tmp_path / "one" / "cat").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "one" / "cat" / f"{i}.png")
    with pytest.raises(DatasetError, match="single class folder.*one sub-folder per class"):
        load(tmp_path / "one")


def test_parquet_image_structs_are_read_as_images(tmp_path):
    """pandas and HF write images to parquet as {"bytes", "path"} structs, without features."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    pixels = arrays(4, 80)
    structs = []
    for i, array in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        structs.append({"bytes": buffer.getvalue(), "path": f"{i}.png"})
    table = pa.table({"image": structs, "label": ["ant", "bee", "cat", "ant"]})
    pq.write_table(table, tmp_path / "structs.parquet")
    loaded = load(tmp_path / "structs.parquet")
    assert loaded.classnames == ["ant", "bee", "cat"] and loaded.labels.tolist() == [0, 1, 2, 0]
    assert_images(loaded.load_images(), pixels)

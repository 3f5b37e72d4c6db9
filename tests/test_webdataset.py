"""clip_benchmark webdatasets (issue 19 item 4): tar shards of ``KEY.jpg`` + ``KEY.cls``,
``classnames.txt`` and ``zeroshot_classification_templates.txt``, read in place."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSNAMES, TINY_CONFIG, coloured_images, invoke, pair_args, succeeds

from clipsharp.data.webdataset import MEMBER

TEMPLATES = ["a photo of a {c}.", "a blurry drawing of the {c}."]


def jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, n: int, seed: int, shards: int = 2, split: str = "test") -> Path:
    """n coloured images in ``root/split/{0..shards-1}.tar`` as clip_benchmark writes them."""
    images, labels = coloured_images(n, seed)
    folder = root / split if split else root
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-n // shards)
    for s in range(shards):
        with tarfile.open(folder / f"{s}.tar", "w") as tar:
            for i in range(s * per, min(n, (s + 1) * per)):
                add(tar, f"s{i:07d}.jpg", jpeg(images[i]))
                add(tar, f"s{i:07d}.cls", str(labels[i]).encode())
    (folder / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return root


@pytest.fixture(scope="module")
def wds(tmp_path_factory) -> Path:
    root = write_webdataset(tmp_path_factory.mktemp("wds") / "wds_tiny", 14, seed=5)
    write_webdataset(root, 6, seed=6, shards=1, split="train")
    return root


def shard_examples(folder: Path) -> tuple[list, list[int]]:
    """The images and labels of every shard, read with tarfile and PIL (no clipsharp)."""
    from PIL import Image

    images, labels = [], []
    for shard in sorted(folder.glob("*.tar"), key=lambda p: int(p.stem)):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                data = tar.extractfile(member).read()
                if member.name.endswith(".jpg"):
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                else:
                    labels.append(int(data))
    return images, labels


def plain_loop(state: dict, images, labels, templates, classnames=CLASSNAMES) -> tuple:
    """Accuracy and mean loss of a zero-shot open_clip model, image by image."""
    import open_clip
    from open_clip.model import CLIP

    model = CLIP(**TINY_CONFIG).eval()
    model.load_state_dict(state, strict=True)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    transform = open_clip.image_transform(32, is_train=False)
    correct, losses = 0, []
    with torch.no_grad():
        head = open_clip.build_zero_shot_classifier(model, tokenizer, classnames, templates)
        for image, label in zip(images, labels, strict=True):
            features = F.normalize(model.encode_image(transform(image).unsqueeze(0)), dim=-1)
            logits = model.logit_scale.exp() * features @ head
            correct += int(logits.argmax(-1).item() == label)
            losses.append(F.cross_entropy(logits, torch.tensor([label])).item())
    return correct / len(labels), sum(losses) / len(losses)


def zero_shot_state(pair) -> dict:
    from safetensors.torch import load_file

    return load_file(str(pair.zero_shot))


def alpha_zero(report: Path, name: str) -> dict:
    doc = json.loads(report.read_text())
    return next(p for p in doc["results"]["path"] if p["alpha"] == 0)["metrics"][name]


@pytest.mark.parametrize("templates", [None, "simple"])
def test_webdataset_numbers_equal_a_plain_open_clip_loop(pair, wds, tmp_path, templates):
    import open_clip

    given = ["--templates", templates] if templates else []
    report = tmp_path / "r.json"
    succeeds("interpolate", *pair_args(pair, "--ood", wds, "--alphas", "0,1", *given, "-o", report))
    images, labels = shard_examples(wds / "test")
    used = [t.replace("{c}", "{}") for t in TEMPLATES]
    used = list(open_clip.SIMPLE_IMAGENET_TEMPLATES) if templates else used
    accuracy, loss = plain_loop(zero_shot_state(pair), images, labels, used)
    metrics = alpha_zero(report, "wds_tiny")
    assert metrics["num_examples"] == 14
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    entry = next(d for d in json.loads(report.read_text())["inputs"]["datasets"]
                 if d["name"] == "wds_tiny")  # fmt: skip
    assert entry["split"] == "test"
    if templates:
        assert "templates" not in entry
    else:
        assert entry["templates"] == "the dataset's zeroshot_classification_templates.txt"


def test_rows_are_those_of_datasets_own_webdataset_builder(wds):
    """Keys, labels and pixels as ``load_dataset("webdataset")`` streams them."""
    import datasets

    from clipsharp.data.stream import _open_image
    from clipsharp.data.webdataset import open_split

    shards = [str(wds / "test" / f"{s}.tar") for s in range(2)]
    theirs = list(datasets.load_dataset("webdataset", data_files={"test": shards},
                                        split="test", streaming=True))  # fmt: skip
    ours = open_split(wds, wds / "test", "test")
    assert ours["__key__"] == [row["__key__"] for row in theirs]
    assert ours.with_format("arrow")["cls"].to_pylist() == [row["cls"] for row in theirs]
    assert ours.features["cls"].names == CLASSNAMES
    for row, value in zip(theirs, ours["jpg"], strict=True):
        assert value["path"].startswith(MEMBER) and value["bytes"] is None  # read in place
        assert np.array_equal(np.asarray(_open_image(value, None)), np.asarray(row["jpg"]))


def test_split_picks_the_shard_folder(wds):
    from clipsharp.data.load import load_eval_data
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions

    def load(text):
        spec = DatasetSpec.parse(text, "ood")
        return load_eval_data(spec, lambda image: torch.zeros(3, 4, 4), DataOptions())

    train, test = load(f"{wds}:train"), load(str(wds))  # without :SPLIT, test
    assert (train.split, train.num_examples, test.split, test.num_examples) == (
        "train",
        6,
        "test",
        14,
    )
    assert train.labels.tolist() == shard_examples(wds / "train")[1]
    assert train.templates == tuple(t.replace("{c}", "{}") for t in TEMPLATES)
    assert train.fingerprint != test.fingerprint


def truncate_member(shard: Path, name: str) -> None:
    """Write ``shard`` again with member ``name`` cut to its first half (a truncated JPEG)."""
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            add(tar, member, data[: len(data) // 2] if member == name else data)


def test_a_missing_shard_and_a_truncated_member_are_named(pair, wds, tmp_path):
    import shutil

    copy = Path(shutil.copytree(wds, tmp_path / "copy"))
    (copy / "test" / "1.tar").unlink()
    result = invoke("interpolate", *pair_args(pair, "--ood", copy, "--alphas", "0"))
    assert result.exit_code == 2
    assert "nshards.txt says 2 shards" in result.stderr and "0.tar" in result.stderr
    (copy / "test" / "nshards.txt").write_text("1\n")
    truncate_member(copy / "test" / "0.tar", "s0000003.jpg")
    result = invoke("interpolate", *pair_args(pair, "--ood", copy, "--alphas", "0"))
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and line.startswith("clipsharp interpolate: error:")
    assert "0.tar member s0000003.jpg" in line and "--skip-bad-images" in line

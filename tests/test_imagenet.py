"""ImageNet and its shifts as users hold them: wnid folders (val, Sketch, A, R), integer
folders (V2), lemma-list ClassLabels (the hub's imagenet-1k), a 200-class subset against a
stored 1000-row head; class names recorded in every report; names that do not fit refused.

The layouts are built here from real wnids and indices with tiny images; every number is
checked against a plain open_clip loop with the right class names and templates.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    TINY_CONFIG,
    coloured_images,
    fine_tune_like,
    invoke,
    save_checkpoint,
    succeeds,
    tiny_model,
    workspace,
)
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import run_interpolation
from clipsharp.errors import DatasetError
from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions

# Four classes of ImageNet-A's 200 (standard indices 6, 11, 13, 15), a colour each
WNIDS = ["n01498041", "n01531178", "n01534433", "n01558993"]
INDICES = [6, 11, 13, 15]
CLIP_NAMES = ["stingray", "goldfinch", "junco", "American robin"]  # open_clip's names of them
LEMMAS = ["stingray", "goldfinch, Carduelis carduelis", "junco, snowbird",
          "robin, American robin, Turdus migratorius"]  # fmt: skip


def image_folder(root, names, n=12, seed=11):
    """``root/<names[k]>/<i>.png``: colour class k under folder ``names[k]``; the files and
    their classes k, as a plain loop reads them."""
    images, labels = coloured_images(n, seed)
    files = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
        files.append((folder / f"{i}.png", label))
    return root, files


def plain_features(state: dict, files) -> torch.Tensor:
    """(N, D) normalised image features of ``files`` by a plain open_clip model."""
    import open_clip
    from open_clip.model import CLIP
    from PIL import Image

    model = CLIP(**TINY_CONFIG).eval()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    transform = open_clip.image_transform(32, is_train=False)
    x = torch.stack([transform(Image.open(path).convert("RGB")) for path, _ in files])
    with torch.no_grad():
        return F.normalize(model.encode_image(x), dim=-1), model


def plain_zero_shot_logits(state: dict, files, classnames, templates) -> torch.Tensor:
    """(N, C) zero-shot logits: open_clip's head of ``classnames`` and ``templates``."""
    import open_clip

    features, model = plain_features(state, files)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        head = open_clip.build_zero_shot_classifier(model, tokenizer, classnames, templates)
        return model.logit_scale.exp() * features @ head


def scores(logits: torch.Tensor, targets: list[int]) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``logits`` against ``targets``."""
    y = torch.tensor(targets)
    return (logits.argmax(-1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def measured(doc: dict, alpha_index: int, name: str) -> tuple[float, float]:
    metrics = doc["results"]["path"][alpha_index]["metrics"][name]
    return metrics["accuracy"], metrics["loss"]


def options(alphas=(0.0, 1.0), classnames=None, **evaluation) -> RunOptions:
    return RunOptions(
        DataOptions(classnames=classnames),
        EvalOptions(device="cpu", **evaluation),
        PathOptions(alphas=alphas),
    )


def assert_path_equals(doc, name, pair, files, classnames, targets, templates):
    """Both endpoints of ``doc`` on ``name`` equal the plain zero-shot loop."""
    for index, path in ((0, pair.zero_shot), (-1, pair.fine_tuned)):
        logits = plain_zero_shot_logits(load_file(str(path)), files, classnames, templates)
        accuracy, loss = scores(logits, targets)
        got = measured(doc, index, name)
        assert got[0] == pytest.approx(accuracy, abs=1e-12)
        assert got[1] == pytest.approx(loss, rel=1e-4)


# ---- class names -----------------------------------------------------------------------------


def test_wnid_folders_are_read_with_clips_imagenet_names(pair, tmp_path):
    """ImageNet val / Sketch / A / R as folders of wnids: prompts name the classes, not wnids."""
    import open_clip

    folder, files = image_folder(tmp_path / "val", WNIDS)
    run = options(templates="simple")
    ws = workspace(pair, run, datasets=[(folder, "ood")])
    assert ws.datasets[0].classnames == CLIP_NAMES
    doc = run_interpolation(ws, run).to_dict()
    entry = doc["inputs"]["datasets"][0]
    assert entry["class_names"] == "imagenet (wnid folders)" and entry["classes"] == CLIP_NAMES
    templates = open_clip.SIMPLE_IMAGENET_TEMPLATES
    targets = [label for _, label in files]
    assert_path_equals(doc, "val", pair, files, CLIP_NAMES, targets, templates)
    wrong = plain_zero_shot_logits(load_file(str(pair.zero_shot)), files, WNIDS, templates)
    assert scores(wrong, targets) != measured(doc, 0, "val")  # the names make a difference


def test_integer_folders_with_classnames_imagenet_are_imagenet_indices(pair, tmp_path):
    """ImageNetV2's layout: folders 0 ... 999; '11' sorts before '6', labels follow the name."""
    import open_clip

    folder, files = image_folder(tmp_path / "v2", [str(i) for i in INDICES])
    run = options(classnames="imagenet", templates="simple")
    ws = workspace(pair, run, datasets=[(folder, "ood")])
    data = ws.datasets[0]
    order = sorted(str(i) for i in INDICES)  # the folders as the image folder lists them
    assert data.classnames == [CLIP_NAMES[INDICES.index(int(name))] for name in order]
    assert data.classes.imagenet == tuple(int(name) for name in order)
    doc = run_interpolation(ws, run).to_dict()
    source = doc["inputs"]["datasets"][0]["class_names"]
    assert source == "imagenet (--classnames imagenet, integer folders)"
    targets = [order.index(str(INDICES[label])) for _, label in files]
    templates = open_clip.SIMPLE_IMAGENET_TEMPLATES
    assert_path_equals(doc, "v2", pair, files, data.classnames, targets, templates)


def test_a_classlabel_of_lemma_lists_is_read_with_clips_names(pair, tmp_path):
    """The hub's imagenet-1k: ClassLabel names 'goldfinch, Carduelis carduelis'."""
    import datasets
    import open_clip

    images, labels = coloured_images(12, seed=11)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=LEMMAS)}
    )
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(
        str(tmp_path / "hub")
    )
    folder, files = image_folder(tmp_path / "same", WNIDS)  # the same images, as files
    run = options(templates="simple")
    ws = workspace(pair, run, datasets=[(tmp_path / "hub", "ood")])
    assert ws.datasets[0].classnames == CLIP_NAMES
    doc = run_interpolation(ws, run).to_dict()
    assert doc["inputs"]["datasets"][0]["class_names"] == "imagenet (synset lemma lists)"
    templates = open_clip.SIMPLE_IMAGENET_TEMPLATES
    assert_path_equals(doc, "hub", pair, files, CLIP_NAMES, labels, templates)


def test_lemma_lists_place_the_two_cranes_and_maillots_by_their_full_names():
    from timm.data import ImageNetInfo

    from clipsharp.data.imagenet import lemma_positions

    lemmas = ImageNetInfo().label_descriptions()
    assert lemmas[134] == lemmas[517] == "crane"
    assert (lemmas[638], lemmas[639]) == ("maillot", "maillot, tank suit")
    hub = list(lemmas)
    hub[517] = "crane2"  # how the hub's imagenet-1k keeps its ClassLabel names unique
    assert lemma_positions(hub) == list(range(1000))
    assert lemma_positions([lemmas[638], lemmas[639]]) == [638, 639]
    assert lemma_positions([lemmas[639], lemmas[638]]) == [639, 638]
    assert lemma_positions([lemmas[100], "crane", lemmas[200]]) == [100, 134, 200]
    assert lemma_positions([lemmas[300], "crane", lemmas[600]]) == [300, 517, 600]
    with pytest.raises(DatasetError, match="'crane' may be either of ImageNet's n02012849 and"):
        lemma_positions([lemmas[100], "crane", lemmas[600]])
    assert lemma_positions(["tench, Tinca tinca", "not a lemma"]) is None


def test_classnames_lists_hold_imagenet_a_and_r_in_their_standard_order():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from clipsharp.data.classnames import read_classnames

    assert read_classnames("imagenet") == list(IMAGENET_CLASSNAMES)
    for name in ("imagenet-a", "imagenet-r"):
        names = read_classnames(name)
        assert len(names) == 200 == len(set(names))
        order = [IMAGENET_CLASSNAMES.index(n) for n in names]
        assert order == sorted(order)
    assert read_classnames("imagenet-a")[:4] == CLIP_NAMES


# ---- a subset of a stored head's classes ------------------------------------------------------


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    """A pair whose stored head has 1000 rows (WiSE-FT's ImageNet classifier): rows of the
    four classes are their zero-shot text directions, the other rows random and strong
    enough that a 1000-way argmax sometimes leaves the subset."""
    import open_clip

    root = tmp_path_factory.mktemp("thousand")
    model = tiny_model(0)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    with torch.no_grad():
        text = open_clip.build_zero_shot_classifier(model, tokenizer, CLIP_NAMES, ["{}"])
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(1000, TINY_CONFIG["embed_dim"], generator=gen) * 3.0
    weight[INDICES] = text.T * 20
    zs = {**model.state_dict(), "head.weight": weight, "head.bias": torch.zeros(1000)}
    ft = fine_tune_like(zs, seed=4)
    ft["head.weight"] = weight + torch.randn(weight.shape, generator=gen)
    return save_checkpoint(root / "zs.safetensors", zs), save_checkpoint(
        root / "ft.safetensors", ft
    )


def stored_logits(path, files) -> torch.Tensor:
    """(N, 1000) logits of a stored head by hand: normalised features @ W.T + b."""
    state = load_file(str(path))
    features, _ = plain_features(state, files)
    return features @ state["head.weight"].T + state["head.bias"]


def test_a_subset_of_a_stored_1000_row_head_restricted_and_all(pair, thousand, tmp_path):
    """ImageNet-A-like: 4 of the 200 wnid folders, a head with no recorded names (ImageNet's
    order assumed). Restricted: the head's columns of the 4 classes; all: argmax and
    softmax over the 1000, a prediction outside the 4 wrong."""
    folder, files = image_folder(tmp_path / "imagenet-a", WNIDS)
    ends = {"zero_shot": thousand[0], "fine_tuned": thousand[1]}
    targets = [label for _, label in files]
    docs = {}
    for convention in ("restricted", "all"):
        run = options(subset_logits=convention)
        ws = workspace(pair, run, checkpoints=ends, datasets=[(folder, "ood")])
        docs[convention] = run_interpolation(ws, run).to_dict()
    for index, path in ((0, thousand[0]), (-1, thousand[1])):
        logits = stored_logits(path, files)
        restricted = scores(logits[:, INDICES], targets)
        every = scores(logits, [INDICES[t] for t in targets])
        for convention, expected in (("restricted", restricted), ("all", every)):
            got = measured(docs[convention], index, "imagenet-a")
            assert got[0] == pytest.approx(expected[0], abs=1e-12)
            assert got[1] == pytest.approx(expected[1], rel=1e-4)
    assert measured(docs["all"], -1, "imagenet-a") != measured(docs["restricted"], -1, "imagenet-a")
    config = docs["restricted"]["config"]
    assert config["subset_logits"] == "restricted"
    assert "ImageNet's standard order assumed" in config["head_mapping"]["imagenet-a"]
    assert docs["all"]["config"]["head_mapping"]["imagenet-a"].startswith("all 1000 outputs")

    named = options(head_classnames="imagenet")  # the head's names: the same columns, by name
    ws = workspace(pair, named, checkpoints=ends, datasets=[(folder, "ood")])
    doc = run_interpolation(ws, named).to_dict()
    assert doc["results"]["path"] == docs["restricted"]["results"]["path"]
    assert doc["config"]["head_mapping"]["imagenet-a"].endswith("by class name")

    from timm.data import ImageNetInfo

    wnids = tmp_path / "wnids.txt"  # a head that names its outputs by wnid
    wnids.write_text("\n".join(ImageNetInfo().label_names()) + "\n")
    by_wnid = options(head_classnames=str(wnids))
    ws = workspace(pair, by_wnid, checkpoints=ends, datasets=[(folder, "ood")])
    assert run_interpolation(ws, by_wnid).to_dict()["results"] == docs["restricted"]["results"]


def test_a_zero_shot_head_over_all_of_imagenet_with_subset_logits_all(pair, tmp_path):
    """--subset-logits all with a zero-shot head: the head of ImageNet's 1000 names."""
    import open_clip

    folder, files = image_folder(tmp_path / "imagenet-r", WNIDS, n=8)
    run = options(alphas=(0.0,), templates="simple", subset_logits="all")
    ws = workspace(pair, run, datasets=[(folder, "ood")])
    doc = run_interpolation(ws, run).to_dict()
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    state = load_file(str(pair.zero_shot))
    templates = open_clip.SIMPLE_IMAGENET_TEMPLATES
    logits = plain_zero_shot_logits(state, files, IMAGENET_CLASSNAMES, templates)
    accuracy, loss = scores(logits, [INDICES[label] for _, label in files])
    got = measured(doc, 0, "imagenet-r")
    assert got == (pytest.approx(accuracy, abs=1e-12), pytest.approx(loss, rel=1e-4))
    assert doc["config"]["head_mapping"]["imagenet-r"].startswith("all: 4 of ImageNet's")


# ---- the command line: notes, report records, refusals ---------------------------------------


def test_the_command_line_notes_and_records_the_class_names(pair, tmp_path):
    folder, _ = image_folder(tmp_path / "sketch", WNIDS, n=8)
    out = tmp_path / "r.json"
    result = succeeds(
        "interpolate", pair.zero_shot, pair.fine_tuned, "--id", pair.in_dist, "--ood", folder,
        "--alphas", "0,1", "--templates", "simple", "--device", "cpu", "-o", out,
    )  # fmt: skip
    assert "note: sketch: class names imagenet (wnid folders)" in result.stderr
    doc = json.loads(out.read_text())
    sources = {d["name"]: d["class_names"] for d in doc["inputs"]["datasets"]}
    assert sources == {"in_dist": "dataset (ClassLabel names)", "sketch": "imagenet (wnid folders)"}
    assert all(len(d["classes_digest"]) == 16 for d in doc["inputs"]["datasets"])
    assert doc["config"]["subset_logits"] == "restricted"


def refused(pair, folder, *extra) -> str:
    """The one line a run on ``folder`` exits 2 with."""
    result = invoke(
        "interpolate", pair.zero_shot, pair.fine_tuned, "--ood", folder, "--alphas", "0,1",
        "--device", "cpu", *extra,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    return result.stderr


def test_class_names_that_do_not_fit_exit_2_with_one_line(pair, tmp_path):
    wnid_folder, _ = image_folder(tmp_path / "a", WNIDS, n=8)
    thousand = tmp_path / "thousand.txt"
    thousand.write_text("\n".join(f"class {i}" for i in range(1000)) + "\n")
    message = refused(pair, wnid_folder, "--classnames", thousand)
    assert "lists 1000 names but the dataset has 4 classes" in message

    plain, _ = image_folder(tmp_path / "colours", ["red", "green", "blue", "yellow"], n=8)
    message = refused(pair, plain, "--classnames", "imagenet")
    assert "4 of its 4 class folders ('blue', 'green', 'red' and 1 more) are not in" in message
    message = refused(pair, wnid_folder, "--classnames", "imagenet-r")
    assert "1 of its 4 class folders ('n01558993') is not in --classnames imagenet-r" in message

    twice, _ = image_folder(tmp_path / "twice", ["n01498041", "6", "11", "13"], n=8)
    message = refused(pair, twice, "--classnames", "imagenet")
    assert "two classes are both ImageNet's n01498041 (stingray)" in message

    repeated = tmp_path / "repeated.txt"
    repeated.write_text("red\ngreen\nred\nyellow\n")
    assert "repeats 'red'" in refused(pair, plain, "--classnames", repeated)


def test_fewer_class_names_than_label_values_exit_2(pair, tmp_path):
    """A ClassLabel of two names over labels 0-3 (its parquet metadata cut short), and
    integer labels 0-3 against a file of two names: what was expected, never a guess."""
    import datasets
    import pyarrow.parquet as pq

    images, labels = coloured_images(8, seed=2)
    four = datasets.ClassLabel(names=["red", "green", "blue", "yellow"])
    features = datasets.Features({"image": datasets.Image(), "label": four})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
        str(tmp_path / "cut.parquet")
    )
    table = pq.read_table(tmp_path / "cut.parquet")
    meta = json.loads(table.schema.metadata[b"huggingface"])
    meta["info"]["features"]["label"]["names"] = ["red", "green"]
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta)})
    pq.write_table(table, tmp_path / "cut.parquet")
    message = refused(pair, tmp_path / "cut.parquet")
    assert "has label 2 outside [0, 2), the class names of dataset (ClassLabel names)" in message

    plain = datasets.Dataset.from_dict({"image": images, "label": labels})
    plain.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "ints.parquet"))
    names = tmp_path / "two.txt"
    names.write_text("red\ngreen\n")
    message = refused(pair, tmp_path / "ints.parquet", "--classnames", names)
    assert "has label 2 outside [0, 2)" in message and "one name per label value" in message


def test_a_names_file_fits_the_classes_by_index_by_name_or_one_per_class(tmp_path):
    from clipsharp.data.classnames import named_classes

    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(11)) + "\n")
    by_index = named_classes(["10", "2"], names, "folders")  # folders sort '10' before '2'
    assert by_index.names == ["class 10", "class 2"] and by_index.source.endswith("(by index)")
    by_name = named_classes(["class 3", "class 1"], names, "folders")
    assert by_name.names == ["class 3", "class 1"] and by_name.source.endswith("(by name)")
    renamed = named_classes([f"c{i}" for i in range(11)], names, "ClassLabel names")
    assert renamed.names[4] == "class 4" and renamed.source.endswith("class order)")
    with pytest.raises(DatasetError, match="lists 11 names but the dataset has 2 classes"):
        named_classes(["ant", "bee"], names, "folders")


def test_the_report_lists_few_class_names_whole_and_many_by_digest():
    import hashlib

    from clipsharp.data.classnames import ClassNames

    few = ClassNames(["a", "b"], "dataset (folder names)").describe()
    assert few == {
        "class_names": "dataset (folder names)",
        "classes": ["a", "b"],
        "classes_digest": hashlib.sha256(b'["a", "b"]').hexdigest()[:16],
    }
    many = ClassNames([f"c{i}" for i in range(1000)], "imagenet (wnid folders)").describe()
    assert many["classes"] == [f"c{i}" for i in range(10)]
    other = ClassNames([f"c{i}" for i in range(999)] + ["x"], "imagenet (wnid folders)")
    assert other.describe()["classes_digest"] != many["classes_digest"]


def test_a_webdataset_of_imagenet_a_against_a_stored_1000_row_head(pair, thousand, tmp_path):
    """clip_benchmark's wds_imagenet-a (CLIP names in classnames.txt) with WiSE-FT's 1000-row
    head: --classnames imagenet-a places each class among ImageNet's outputs by its name;
    the numbers are the restricted logits by hand, on the same images as PNG members."""
    import tarfile

    _, files = image_folder(tmp_path / "images", WNIDS)
    root = tmp_path / "wds_imagenet-a"
    (root / "test").mkdir(parents=True)
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for i, (path, label) in enumerate(files):
            tar.add(path, arcname=f"s{i:07d}.png")
            cls = tmp_path / f"{i}.cls"
            cls.write_text(str(label))
            tar.add(cls, arcname=f"s{i:07d}.cls")
    (root / "classnames.txt").write_text("\n".join(CLIP_NAMES) + "\n")
    run = options(classnames="imagenet-a")
    ends = {"zero_shot": thousand[0], "fine_tuned": thousand[1]}
    ws = workspace(pair, run, checkpoints=ends, datasets=[(root, "ood")])
    doc = run_interpolation(ws, run).to_dict()
    targets = [label for _, label in files]
    for index, path in ((0, thousand[0]), (-1, thousand[1])):
        expected = scores(stored_logits(path, files)[:, INDICES], targets)
        got = measured(doc, index, "wds_imagenet-a")
        assert got[0] == pytest.approx(expected[0], abs=1e-12)
        assert got[1] == pytest.approx(expected[1], rel=1e-4)
    entry = doc["inputs"]["datasets"][0]
    assert entry["class_names"].startswith("imagenet-a (--classnames imagenet-a")
    assert "standard order assumed" in doc["config"]["head_mapping"]["wds_imagenet-a"]

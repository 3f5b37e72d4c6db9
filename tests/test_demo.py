"""The demo builder, with a tiny recipe (the full recipe takes about a minute)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, succeeds
from safetensors import safe_open
from safetensors.torch import load_file

import clipsharp
from clipsharp.demo.build import CLASSNAMES, DemoRecipe, build_demo, load_digits

SEED = 3


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One tiny demo build shared by the tests, with every progress call recorded."""
    calls = []
    root = tmp_path_factory.mktemp("demo")
    found = build_demo(root, recipe=DemoRecipe.tiny(), seed=SEED, progress=calls.append)
    return found, calls


def checkpoints(found):
    return {"zero_shot": found.zero_shot, **found.fine_tuned}


def test_bundled_digits_are_the_uci_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and counts.sum() == 1797 and counts.min() > 170


def test_build_writes_every_file(built):
    found, _ = built
    assert found.built
    assert list(found.fine_tuned) == [name for name, _ in DemoRecipe.tiny().finetune_lrs]
    assert {"careful", "aggressive"} <= set(found.fine_tuned) and len(found.fine_tuned) == 6
    for path in [*checkpoints(found).values(), found.in_dist, found.shifted]:
        assert path.parent == found.root or path.parent == found.root / "data"
        assert path.exists()
    record = json.loads((found.root / "demo.json").read_text())
    assert record["recipe_hash"] == DemoRecipe.tiny().fingerprint(SEED)


@pytest.mark.parametrize("name", ["zero_shot", "careful", "lr1e-3", "aggressive"])
def test_checkpoint_metadata_builds_a_model_that_loads_strictly(built, name):
    import open_clip

    path = checkpoints(built[0])[name]
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["clipsharp.version"] == clipsharp.__version__
    expected = "demo-pretrain" if name == "zero_shot" else "demo-finetune"
    assert metadata["clipsharp.operation"] == expected
    parameters = json.loads(metadata["clipsharp.parameters"])
    assert parameters["seed"] == SEED
    if name != "zero_shot":
        assert parameters["name"] == name
        assert parameters["lr"] == dict(DemoRecipe.tiny().finetune_lrs)[name]
    config = json.loads(metadata["clipsharp.model_config"])
    assert config == DemoRecipe.tiny().model_config()
    model = open_clip.model.CLIP(**config)
    state = load_file(path)
    assert not any(key.startswith("head.") for key in state)
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", ["careful", "lr2e-4", "aggressive"])
def test_fine_tuning_moves_the_image_tower_only(built, name):
    found, _ = built
    zero_shot = load_file(found.zero_shot)
    fine_tuned = load_file(found.fine_tuned[name])
    assert zero_shot.keys() == fine_tuned.keys()
    changed = {key for key in zero_shot if not torch.equal(zero_shot[key], fine_tuned[key])}
    assert changed and all(key.startswith("visual.") for key in changed)
    assert "visual.proj" in changed
    assert torch.equal(zero_shot["logit_scale"], fine_tuned["logit_scale"])


def test_careful_and_aggressive_differ(built):
    found, _ = built
    careful = load_file(found.fine_tuned["careful"])
    aggressive = load_file(found.fine_tuned["aggressive"])
    assert not torch.equal(careful["visual.proj"], aggressive["visual.proj"])


def test_eval_sets_load_with_word_class_names(built):
    import datasets

    found, _ = built
    in_dist = datasets.load_from_disk(str(found.in_dist))
    shifted = datasets.load_from_disk(str(found.shifted))
    recipe = DemoRecipe.tiny()
    for table in (in_dist, shifted):
        assert table.features["label"].names == list(CLASSNAMES)
        assert isinstance(table.features["image"], datasets.Image)
        assert len(table) == 1797 - recipe.num_train
    assert in_dist["label"] == shifted["label"]
    size = (recipe.image_size, recipe.image_size)
    id_pixels = np.stack([np.asarray(image) for image in in_dist["image"]])
    ood_pixels = np.stack([np.asarray(image) for image in shifted["image"]])
    assert id_pixels.shape[1:] == ood_pixels.shape[1:] == size
    assert (id_pixels != ood_pixels).mean() > 0.5
    assert recipe.shift_rotation == 0 and recipe.shift_invert
    np.testing.assert_array_equal(ood_pixels, 255 - id_pixels)  # the shift: colour inversion


def test_eval_sets_hold_the_held_out_digits(built):
    """The ID images are the upsampled held-out digits: their 8x8 block means match."""
    import datasets

    found, _ = built
    images, labels = load_digits()
    in_dist = datasets.load_from_disk(str(found.in_dist))
    train_labels = np.bincount(labels, minlength=10) - np.bincount(in_dist["label"], minlength=10)
    assert train_labels.sum() == DemoRecipe.tiny().num_train and train_labels.min() > 0
    first = np.asarray(in_dist[0]["image"], dtype=np.float64)
    blocks = first.reshape(8, first.shape[0] // 8, 8, -1).mean(axis=(1, 3)) * 16 / 255
    distance = np.abs(images.astype(np.float64) - blocks).mean(axis=(1, 2))
    assert labels[distance.argmin()] == in_dist[0]["label"]
    assert distance.min() < 1.5


def test_training_images_are_preprocessed_like_evaluation(built):
    """Training tensors equal open_clip's eval transform applied to the stored PNGs."""
    import datasets
    import open_clip

    from clipsharp.demo.build import normalize, pixel_tensors, render_digit, split_digits

    found, _ = built
    recipe = DemoRecipe.tiny()
    images, labels = load_digits()
    _, held_out = split_digits(len(labels), recipe.num_train)
    rendered = [render_digit(digit, recipe.image_size) for digit in images[held_out[:20]]]
    ours = normalize(pixel_tensors(rendered, recipe.image_size))
    transform = open_clip.image_transform(recipe.image_size, is_train=False)
    stored = datasets.load_from_disk(str(found.in_dist)).select(range(20))["image"]
    theirs = torch.stack([transform(image.convert("RGB")) for image in stored])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_progress_reports_every_stage(built):
    _, calls = built
    recipe = DemoRecipe.tiny()
    finals = [(e.task, e.done) for e in calls if e.done == e.total]
    fine_tunes = [(f"fine-tune {name}", recipe.finetune_steps) for name, _ in recipe.finetune_lrs]
    assert finals == [("pretrain", recipe.pretrain_steps), *fine_tunes]
    assert fine_tunes[0][0] == "fine-tune careful" and fine_tunes[-1][0] == "fine-tune aggressive"


def test_second_call_comes_from_the_cache(built):
    found, _ = built
    before = {path: path.stat().st_mtime_ns for path in found.root.rglob("*")}

    def no_training(event):
        pytest.fail(f"a cached demo trained again ({event.task})")

    again = build_demo(found.root, recipe=DemoRecipe.tiny(), seed=SEED, progress=no_training)
    assert not again.built
    assert again.zero_shot == found.zero_shot and again.fine_tuned == found.fine_tuned
    assert {path: path.stat().st_mtime_ns for path in found.root.rglob("*")} == before


def test_another_seed_is_not_cached_and_global_state_is_kept(built, tmp_path):
    import datasets

    found, _ = built
    root = tmp_path / "copy"
    shutil.copytree(found.root, root)
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    bars = datasets.is_progress_bar_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    again = build_demo(root, recipe=DemoRecipe.tiny(), seed=SEED + 1)
    assert again.built
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads and datasets.is_progress_bar_enabled() == bars
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    first, second = load_file(found.zero_shot), load_file(again.zero_shot)
    assert not torch.equal(first["visual.proj"], second["visual.proj"])


def test_force_rebuilds_bit_identical_checkpoints(built, tmp_path):
    found, _ = built
    root = tmp_path / "copy"
    shutil.copytree(found.root, root)
    again = build_demo(root, recipe=DemoRecipe.tiny(), seed=SEED, force=True)
    assert again.built
    for name, path in checkpoints(found).items():
        first, second = load_file(path), load_file(checkpoints(again)[name])
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first), name


BUILD = """
import sys
from pathlib import Path

import torch

torch.set_num_threads(int(sys.argv[2]))
from clipsharp.demo.build import DemoRecipe, build_demo

build_demo(Path(sys.argv[1]), recipe=DemoRecipe.tiny(), seed=3)
"""


@pytest.mark.slow  # two builds, each in a process of its own
def test_builds_are_byte_identical_across_processes_and_thread_counts(tmp_path):
    """One and two threads outside, in separate processes: the same sha256 for every file."""
    import hashlib
    import subprocess
    import sys

    digests = []
    for threads in (1, 2):
        root = tmp_path / f"threads-{threads}"
        subprocess.run([sys.executable, "-c", BUILD, str(root), str(threads)], check=True)
        names = ["zero_shot"] + [f"fine_tuned_{n}" for n, _ in DemoRecipe.tiny().finetune_lrs]
        files = [root / f"{name}.safetensors" for name in names]
        digests.append([hashlib.sha256(path.read_bytes()).hexdigest() for path in files])
    assert digests[0] == digests[1]


def test_sorted_metadata_keeps_the_file_readable():
    from safetensors.torch import load, save

    from clipsharp.demo.build import sorted_metadata

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    metadata = {f"key.{c}": f'{{"value": "{c}"}}' for c in "dacbe"}
    data = sorted_metadata(save(tensors, metadata=metadata))
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == sorted(metadata)
    assert header["__metadata__"] == metadata
    loaded = load(data)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[key], tensors[key]) for key in tensors)


@pytest.mark.slow  # the whole tour: eight reports, their figures and a study of six models
def test_cli_demo_quick_writes_every_report_and_figure(tmp_path):
    out = tmp_path / "demo"
    result = succeeds("demo", "--quick", "--out", out, "--device", "cpu")
    stems = {"interpolate-careful", "interpolate-aggressive", "layerwise-careful",
             "layerwise-aggressive", "sharpness-careful", "sharpness-aggressive",
             "stragglers-aggressive", "prune-aggressive"}  # fmt: skip
    assert {p.stem for p in (out / "reports").glob("*.json")} == stems
    assert {p.stem for p in (out / "figures").glob("*.png")} == stems | {"study"}
    study = json.loads((out / "study.json").read_text())
    names = [f"fine_tuned_{name}" for name, _ in DemoRecipe.tiny().finetune_lrs]
    assert [row["name"] for row in study["results"]["checkpoints"]] == names
    assert study["inputs"]["num_checkpoints"] == 6
    for row in study["results"]["checkpoints"]:
        assert set(row["files"]) == {"interpolate", "sharpness", "stragglers"}
        assert all(Path(path).parent == out / "study.reports" for path in row["files"].values())
        assert "gain[shifted]" in row["measures"]
    interpolate = json.loads((out / "reports" / "interpolate-careful.json").read_text())
    careful = study["results"]["checkpoints"][0]["measures"]["gain[shifted]"]
    assert careful == interpolate["summary"]["shifted"]["gain"]  # the tour's own path
    assert "correlation with the OOD gain over 6" in " ".join(result.stderr.split())
    prune = json.loads((out / "reports" / "prune-aggressive.json").read_text())
    stragglers = json.loads((out / "reports" / "stragglers-aggressive.json").read_text())
    assert prune["summary"]["layers"] == stragglers["summary"]["stragglers"]
    assert {"before", "after"} <= prune["summary"].keys()
    again = invoke("demo", "--quick", "--out", out, "--device", "cpu")
    assert again.exit_code == 0 and "reused from the cache" in again.stderr


DOC = Path(__file__).resolve().parent.parent / "docs" / "demo.md"


def documented(section: str, column: str) -> dict[str, list[str]]:
    """The table under ``section`` of docs/demo.md that has ``column``: column -> cells.

    Cells lose their bold marks.
    """
    text = DOC.read_text(encoding="utf-8").split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    lines = text.splitlines()
    first = next(
        i for i, line in enumerate(lines) if line.startswith("| ") and f" {column} " in line
    )
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}


@pytest.mark.slow  # the real recipe, trained from nothing: minutes
def test_a_fresh_build_gives_the_numbers_docs_demo_md_shows(tmp_path):
    """The real recipe, seed 0, built from nothing: every number of the doc's tables, exactly.

    Accuracies are counts out of 597, so three decimals identify them exactly.
    """
    from clipsharp.demo.run import TourOptions, run_tour

    found = build_demo(tmp_path / "demo", seed=0)
    reports = {
        stem: report.to_dict()
        for stem, report in run_tour(found, TourOptions(device="cpu")).items()
    }
    path = documented("What the pair shows (seed 0)", "α")
    for name in ("careful", "aggressive"):
        points = reports[f"interpolate-{name}"]["results"]["path"]
        assert [f"{p['alpha']:.1f}" for p in points] == path["α"]
        for column, dataset in ((f"{name} ID", "in_dist"), (f"{name} OOD", "shifted")):
            measured = [f"{p['metrics'][dataset]['accuracy']:.3f}" for p in points]
            assert measured == path[column], column
    facts = documented("What `clipsharp demo` runs", "quantity")
    for stem, key, value in zip(facts["report"], facts["quantity"], facts["value"], strict=True):
        assert f"{lookup(reports[stem], key):.3f}" == value, (stem, key)
    stragglers = reports["stragglers-aggressive"]["summary"]["stragglers"]
    assert stragglers == ["visual.embed", "visual.block.0"]  # as the doc's prose says
    gains = documented("What the pair shows (seed 0)", "OOD gain")
    rows = {row["name"]: row for row in reports["study"]["results"]["checkpoints"]}
    assert list(rows) == [f"fine_tuned_{name}" for name in gains["fine-tune"]]
    for i, name in enumerate(gains["fine-tune"]):
        path = json.loads(Path(rows[f"fine_tuned_{name}"]["files"]["interpolate"]).read_text())
        end, summary = path["results"]["path"][-1]["metrics"], path["summary"]["shifted"]
        assert f"{end['in_dist']['accuracy']:.3f}" == gains["ID at α = 1"][i], name
        assert f"{end['shifted']['accuracy']:.3f}" == gains["OOD at α = 1"][i], name
        assert f"{summary['gain']:.3f}" == gains["OOD gain"][i], name
        assert f"{summary['best_alpha']:.1f}" == gains["best α"][i], name
        assert rows[f"fine_tuned_{name}"]["measures"]["gain[shifted]"] == summary["gain"]


def lookup(report: dict, key: str) -> float:
    """A number in a report by a dotted key (list items by index)."""
    value = report
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _sweep(saturated: dict[float, tuple[bool, bool]]) -> dict:
    """A sharpness report of one dataset: rho -> (saturated by the noise, at chance clean)."""
    points = [
        {"alpha": 1.0, "rho": rho, "metrics": {"ood": {"saturated": s or c, "clean_at_chance": c}}}
        for rho, (s, c) in saturated.items()
    ]
    rows = [
        {"rho": rho, "saturated": s or c, "saturated_alphas": [1.0] if s or c else []}
        for rho, (s, c) in saturated.items()
    ]
    return {"summary": {"ood": rows}, "results": {"points": points}}


def test_saturation_warning_names_a_rho_that_did_not_saturate():
    from clipsharp.reports.notes import saturation_warnings

    def warnings(doc: dict) -> str:
        return "\n".join(saturation_warnings(doc))

    sweep = warnings(_sweep({0.1: (False, False), 0.3: (False, False), 1.0: (True, False)}))
    assert "at rho=1 " in sweep and "at --rho 0.3 the noise brought no point" in sweep
    alone = warnings(_sweep({1.0: (True, False)}))
    assert "try --rho 0.1," in alone
    clean = warnings(_sweep({0.1: (False, True), 1.0: (True, False)}))  # 0.1: at chance clean
    assert "at --rho 0.1 the noise brought no point" in clean
    assert "even without noise" in clean


def test_the_careful_fine_tune_sees_inverted_digits_as_evaluation_would():
    """``invert_normalized`` of a normalised image is the normalised colour-inverted image."""
    from clipsharp.demo.build import invert_normalized, normalize, pixel_tensors, render_digit

    digits, _ = load_digits()
    images = [render_digit(digit, 16) for digit in digits[:8]]
    inverted = [render_digit(digit, 16, invert=True) for digit in digits[:8]]
    clean, shifted = pixel_tensors(images, 16), pixel_tensors(inverted, 16)
    torch.testing.assert_close(invert_normalized(normalize(clean)), normalize(shifted))
    assert dict(DemoRecipe().finetune_invert) == {"careful": 0.02}  # the others: clean digits


def test_only_the_careful_fine_tune_sees_inverted_digits(tmp_path):
    """Tiny builds with and without inversions (half the images: three tiny steps of 32
    images at 0.02 may invert none): the careful tensors differ, the others do not."""
    from dataclasses import replace

    tiny = DemoRecipe.tiny()
    half = build_demo(tmp_path / "half", recipe=replace(tiny, finetune_invert=(("careful", 0.5),)))
    clean = build_demo(tmp_path / "clean", recipe=replace(tiny, finetune_invert=()))
    for name, path in checkpoints(half).items():
        first, second = load_file(path), load_file(checkpoints(clean)[name])
        same = all(torch.equal(first[key], second[key]) for key in first)
        assert same == (name != "careful"), name


def test_demo_evaluation_flags_reach_every_analysis_of_the_tour():
    """--device, --batch-size and --prefetch-blocks of `demo` are its analyses' options."""
    from clipsharp.demo.run import _run_options, tour_of
    from clipsharp.options import DemoOptions, EvalOptions

    flags = EvalOptions(device="cpu", batch_size=7, prefetch_blocks=2)
    tour = tour_of(DemoOptions(quick=True, evaluation=flags))
    assert (tour.iterations, tour.limit) == (2, 64)  # --quick: the short tour
    evaluation = _run_options(tour, (0.0, 1.0)).eval
    assert (evaluation.device, evaluation.batch_size, evaluation.prefetch_blocks) == ("cpu", 7, 2)

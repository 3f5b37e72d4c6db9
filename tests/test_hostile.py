"""Hostile invocations (issue 11): no input is ever destroyed, every bad input exits 2 with one
line naming it, and an interrupted prune leaves its checkpoint and report both or neither.

Each case runs on private copies of the tiny pair and asserts that every input file's sha256
and every input folder's listing are what they were before.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CLASSNAMES, TINY_CONFIG, invoke
from safetensors.torch import load_file

from clipsharp.files import file_sha256
from clipsharp.reports.report import MAX_BYTES, SCHEMA


@pytest.fixture()
def given(pair, tmp_path) -> dict[str, Path]:
    """Private copies of every kind of input a run reads, by name."""
    root = tmp_path / "in"
    root.mkdir()
    files = {
        "zs": shutil.copy(pair.zero_shot, root / "zs.safetensors"),
        "ft": shutil.copy(pair.fine_tuned, root / "ft.safetensors"),
        "shifted": shutil.copytree(pair.shifted, root / "shifted"),
    }
    files = {name: Path(path) for name, path in files.items()}
    files["classnames"] = root / "classes.txt"
    files["classnames"].write_text("\n".join(CLASSNAMES) + "\n")
    files["templates"] = root / "templates.txt"
    files["templates"].write_text("a photo of a {}.\n")
    files["model"] = root / "tiny.json"
    files["model"].write_text(json.dumps(TINY_CONFIG))
    files["interpolate"] = write(root / "interpolate.json", interpolate_report(files))
    files["layerwise"] = write(root / "layerwise.json", layerwise_report(files))
    return files


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def checkpoints(files: dict) -> dict:
    return {role: {"path": str(files[name]), "sha256": file_sha256(files[name])}
            for role, name in (("zero_shot", "zs"), ("fine_tuned", "ft"))}  # fmt: skip


def interpolate_report(files: dict) -> dict:
    point = {"metrics": {"shifted": {"accuracy": 0.5, "loss": 1.0, "num_examples": 20}}}
    summary = {"best_alpha": 0.5, "best_accuracy": 0.6, "gain": 0.1, "gain_over_endpoints": 0.0,
               "depth": 0.1, "barrier": -0.1, "failure_mode": False}  # fmt: skip
    return {"schema": SCHEMA, "command": "interpolate",
            "inputs": {"checkpoints": checkpoints(files),
                       "datasets": [{"name": "shifted", "role": "ood"}]},
            "config": {}, "results": {"path": [{"alpha": a, **point} for a in (0.0, 0.5, 1.0)]},
            "summary": {"shifted": summary}}  # fmt: skip


def layerwise_report(files: dict) -> dict:
    layers = [f"visual.block.{i}" for i in range(4)]
    rows = [{"layer": name, "unchanged": False,
             "shifted": {"gain": 0.0, "depth": 0.1 * i, "barrier": 0.0, "min_accuracy": 0.5,
                         "collapse": False}} for i, name in enumerate(layers)]  # fmt: skip
    return {"schema": SCHEMA, "command": "layerwise",
            "inputs": {"checkpoints": checkpoints(files),
                       "datasets": [{"name": "shifted", "role": "ood"}]},
            "config": {"background": "ft"}, "results": {"layers": []},
            "summary": {"layers": rows}}  # fmt: skip


def snapshot(files: dict[str, Path]) -> dict[str, object]:
    """sha256 of every input file, listing (with sha256s) of every input folder."""
    state: dict[str, object] = {}
    for path in files.values():
        if path.is_dir():
            for inner in sorted(path.rglob("*")):
                state[str(inner)] = file_sha256(inner) if inner.is_file() else "folder"
        elif path.is_file():
            state[str(path)] = file_sha256(path)
        elif path.exists():  # a FIFO or a device: its kind and number, never read
            state[str(path)] = (path.stat().st_mode, path.stat().st_rdev)
    return state


def refused(result, *names: str) -> str:
    """Exit 2, one line on stderr naming each of ``names``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


# ----------------------------------------------------------------------------- data loss

DATA_LOSS = {  # case -> (arguments, the input named in the message)
    "inspect -o the checkpoint": (["inspect", "{ft}", "-o", "{ft}"], "{ft}"),
    "-o inside the OOD folder": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "-o", "{shifted}/report.json"],
        "{shifted}",
    ),  # fmt: skip
    "-o a file of the OOD folder": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "-o", "{shifted}/state.json"],
        "{shifted}",
    ),  # fmt: skip
    "-o in the folder of an OOD glob": (
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}/*.arrow:train",
            "-o",
            "{shifted}/r.json",
        ],
        "{shifted}",
    ),  # fmt: skip
    "-o the classnames": (
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--classnames",
            "{classnames}",
            "-o",
            "{classnames}",
        ],
        "{classnames}",
    ),  # fmt: skip
    "-o the templates": (
        [
            "layerwise",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--templates",
            "{templates}",
            "-o",
            "{templates}",
        ],
        "{templates}",
    ),  # fmt: skip
    "-o the model config": (
        ["sharpness", "{ft}", "--ood", "{shifted}", "--model", "{model}", "-o", "{model}"],
        "{model}",
    ),  # fmt: skip
    "-o a symlink to a checkpoint": (["inspect", "{zs}", "{ft}", "-o", "{link}"], "{ft}"),
    "-o a hard link to a checkpoint": (["inspect", "{zs}", "-o", "{hard}"], "{zs}"),
    "--data-cache the OOD folder": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "--data-cache", "{shifted}"],
        "{shifted}",
    ),  # fmt: skip
    "prune -o the checkpoint": (
        ["prune", "{ft}", "--layers", "visual.block.0", "-o", "{ft}"],
        "{ft}",
    ),  # fmt: skip
    "prune --report the zero-shot": (
        [
            "prune",
            "{ft}",
            "--zero-shot",
            "{zs}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{zs}",
        ],
        "{zs}",
    ),  # fmt: skip
    "prune -o and --report one file": (
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{out}/p.safetensors",
        ],
        "-o",
    ),  # fmt: skip
    "plot -o its report": (["plot", "{interpolate}", "-o", "{interpolate}"], "{interpolate}"),
    "study -o its report": (["study", "{interpolate}", "-o", "{interpolate}"], "{interpolate}"),
    "stragglers -o its layerwise report": (
        [
            "stragglers",
            "{zs}",
            "{ft}",
            "--by",
            "barrier",
            "--layerwise",
            "{layerwise}",
            "-o",
            "{layerwise}",
        ],
        "{layerwise}",
    ),  # fmt: skip
    "convert -o the checkpoint": (["convert", "{ft}", "-o", "{ft}"], "{ft}"),
    "-o the config file": (["inspect", "{zs}", "-o", "clipsharp.toml"], "clipsharp.toml"),
    "demo --out the config file": (["demo", "--out", "clipsharp.toml"], "clipsharp.toml"),
    "demo --out a user's folder": (["demo", "--out", "{shifted}", "--quick"], "{shifted}"),
}


@pytest.mark.parametrize("case", DATA_LOSS)
def test_no_output_is_or_lies_inside_an_input(given, tmp_path, monkeypatch, case):
    (tmp_path / "out").mkdir()
    (tmp_path / "clipsharp.toml").write_text('device = "cpu"\n')
    os.symlink(given["ft"], tmp_path / "link.json")
    os.link(given["zs"], tmp_path / "hard.json")
    monkeypatch.chdir(tmp_path)
    names = {name: str(path) for name, path in given.items()}
    names |= {"link": tmp_path / "link.json", "hard": tmp_path / "hard.json", "out": "out"}
    args, named = DATA_LOSS[case]
    watched = {**given, "config": tmp_path / "clipsharp.toml"}
    before = snapshot(watched)
    result = invoke(*(arg.format(**names) for arg in args))
    refused(result, named.format(**names), "choose a path")
    assert snapshot(watched) == before
    assert not list((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- exit codes


def forged_header(path: Path, shape: list[int], data: bytes = b"\0" * 16) -> Path:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 40_000_000_000]}}
    )
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + data)
    return path


def make_input(tmp_path: Path, given: dict, name: str) -> Path:
    """Hostile files, made on demand."""
    if name == "forged":  # a 100000 x 100000 float32 tensor claimed by a 16-byte file
        return forged_header(tmp_path / "forged.safetensors", [100_000, 100_000])
    if name == "short":  # a real checkpoint cut short: the header claims more than there is
        data = given["ft"].read_bytes()
        (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
        return tmp_path / "short.safetensors"
    if name == "zs-copy":
        return Path(shutil.copy(given["zs"], tmp_path / "zs-copy.safetensors"))
    if name == "array":
        return write(tmp_path / "array.json", [1, 2])
    if name in ("latin1-name", "short-webdataset"):
        return hostile_folder(tmp_path / name, name)
    if name == "fifo":
        os.mkfifo(tmp_path / "r.fifo")
        return tmp_path / "r.fifo"
    if name == "socket":  # the file of a Unix socket stays after the socket is closed
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(str(tmp_path / "r.sock"))
        return tmp_path / "r.sock"
    if name == "deep":  # nested far past any report: json's parser recurses once a level
        text = '{"schema": "%s", "command": "interpolate", "config": %s}'
        (tmp_path / "deep.json").write_text(text % (SCHEMA, "[" * 100_000 + "]" * 100_000))
        return tmp_path / "deep.json"
    if name == "huge":  # past the size limit (sparse: no 64 MiB written), never read whole
        with open(tmp_path / "huge.json", "wb") as f:
            f.truncate(MAX_BYTES + 1)
        return tmp_path / "huge.json"
    if name == "ft-pt":  # the fine-tuned weights as a torch.save pickle, for convert
        torch.save(load_file(given["ft"]), tmp_path / "ft.pt")
        return tmp_path / "ft.pt"
    if name == "cut-pt":  # a torch.save file cut in half (a download that stopped)
        data = (make_input(tmp_path, given, "ft-pt")).read_bytes()
        (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
        return tmp_path / "cut.pt"
    if name == "wide-head":  # a separately saved head of 7-dimensional features, not 32
        torch.save({"weight": torch.randn(3, 7), "bias": torch.zeros(3)}, tmp_path / "head.pt")
        return tmp_path / "head.pt"
    if name == "zs-fifo":  # what <(cat zs.safetensors) gives: a pipe, readable once
        os.mkfifo(tmp_path / "zs.fifo")
        return tmp_path / "zs.fifo"
    doc = json.loads(given["interpolate" if name != "layer-gap" else "layerwise"].read_text())
    if name == "metrics-gap":  # a dataset missing from one point of the path
        del doc["results"]["path"][1]["metrics"]["shifted"]
    elif name == "wrong-type":
        doc["summary"]["shifted"]["gain"] = "high"
    elif name == "layer-gap":  # a dataset missing from a layer entry
        del doc["summary"]["layers"][2]["shifted"]
    elif name == "baseline-list":
        doc["summary"] = ["shifted"]
    return write(tmp_path / f"{name}.json", doc)


def hostile_folder(root: Path, name: str) -> Path:
    """An image folder with a file name that is not UTF-8, or a webdataset missing shards."""
    from conftest import coloured_images

    images, labels = coloured_images(4, seed=0)
    if name == "short-webdataset":
        from test_webdataset import write_webdataset

        write_webdataset(root, 4, seed=0, shards=1)
        (root / "test" / "nshards.txt").write_text("3\n")
        return root
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / CLASSNAMES[label]).mkdir(parents=True, exist_ok=True)
        image.save(root / CLASSNAMES[label] / f"{i}.png")
    os.rename(root / "red" / "0.png", os.fsencode(root / "red") + b"/caf\xe9.png")
    return root


EXIT_2 = {  # case -> (arguments, what the message names)
    "header claims 40 GB": (["inspect", "{forged}"], ["{forged}", "40000000000", "not a readable"]),
    "header past the end of the file": (["inspect", "{short}"], ["{short}", "truncated"]),
    "same checkpoint twice": (["inspect", "{zs}", "{zs}"], ["same checkpoint"]),
    "same bytes twice": (["inspect", "{zs}", "{zs-copy}"], ["same checkpoint"]),
    "--z nan": (
        [
            "stragglers",
            "{zs}",
            "{ft}",
            "--by",
            "barrier",
            "--layerwise",
            "{layerwise}",
            "--z",
            "nan",
        ],
        ["--z"],
    ),  # fmt: skip
    "--failure-threshold inf": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "--failure-threshold", "inf"],
        ["--failure-threshold"],
    ),  # fmt: skip
    "--collapse-threshold nan": (
        ["layerwise", "{zs}", "{ft}", "--ood", "{shifted}", "--collapse-threshold", "nan"],
        ["--collapse-threshold"],
    ),  # fmt: skip
    "--sparsity -inf": (
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--sparsity",
            "-inf",
        ],
        ["--sparsity"],
    ),  # fmt: skip
    "--alphas with nan": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "--alphas", "0:nan:0.1"],
        ["--alphas"],
    ),  # fmt: skip
    "--rho inf": (["sharpness", "{ft}", "--ood", "{shifted}", "--rho", "0.1,inf"], ["--rho"]),
    "--min-gain nan": (["check", "{interpolate}", "--min-gain", "nan"], ["--min-gain"]),
    "plot a JSON array": (
        ["plot", "{array}", "-o", "{out}/f.png"],
        ["{array}", "not a clipsharp report"],
    ),  # fmt: skip
    "check a JSON array": (
        ["check", "{array}", "--min-gain", "0"],
        ["{array}", "not a clipsharp report"],
    ),  # fmt: skip
    "plot: a dataset missing from the path": (
        ["plot", "{metrics-gap}", "-o", "{out}/f.png"],
        ["{metrics-gap}", "results.path[1].metrics.shifted"],
    ),  # fmt: skip
    "study: a gain of the wrong type": (
        ["study", "{wrong-type}"],
        ["{wrong-type}", "summary.shifted.gain"],
    ),  # fmt: skip
    "check: a baseline summary that is a list": (
        ["check", "{interpolate}", "--baseline", "{baseline-list}", "--max-drop", "0.01"],
        ["{baseline-list}", "summary"],
    ),  # fmt: skip
    "stragglers: a dataset missing from a layer": (
        ["stragglers", "{zs}", "{ft}", "--by", "barrier", "--layerwise", "{layer-gap}"],
        ["{layer-gap}", "summary.layers[2].shifted"],
    ),  # fmt: skip
    "stragglers: a missing checkpoint": (
        [
            "stragglers",
            "{out}/nothing.safetensors",
            "{ft}",
            "--by",
            "barrier",
            "--layerwise",
            "{layerwise}",
        ],
        ["nothing.safetensors"],
    ),  # fmt: skip
    "-o a folder": (["inspect", "{zs}", "-o", "{out}"], ["{out}", "folder"]),
    "prune --report a folder": (
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{out}",
        ],
        ["--report {out}", "folder"],
    ),  # fmt: skip
    "prune --report in a missing folder": (
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{out}/no/r.json",
        ],
        ["--report"],
    ),  # fmt: skip
    "demo --out a file": (["demo", "--out", "{classnames}"], ["--out", "{classnames}"]),
    "an image folder holding a name that is not UTF-8": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{latin1-name}", "--alphas", "0"],
        ["{latin1-name}/red/caf\\xe9.png", "not valid UTF-8", "rename it"],
    ),  # fmt: skip
    "a webdataset whose nshards.txt counts more shards": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{short-webdataset}", "--alphas", "0"],
        ["{short-webdataset}/test/nshards.txt", "says 3 shards", "holds 1"],
    ),  # fmt: skip
    "--resume with -o a FIFO": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "-o", "{fifo}", "--resume"],
        ["--resume", "{fifo}", "a FIFO"],
    ),  # fmt: skip
    "-o a socket": (["inspect", "{zs}", "-o", "{socket}"], ["-o {socket}", "a socket"]),
    "merge -o a socket": (
        ["merge", "{zs}", "{ft}", "--alpha", "0.5", "-o", "{socket}"],
        ["{socket}", "a socket"],
    ),  # fmt: skip
    "check: a report nested 100000 deep": (
        ["check", "{deep}", "--min-gain", "0"],
        ["{deep}", "nested more than 32 levels"],
    ),  # fmt: skip
    "show: a report nested 100000 deep": (["show", "{deep}"], ["{deep}", "nested"]),
    "plot: a report nested 100000 deep": (
        ["plot", "{deep}", "-o", "{out}/f.png"],
        ["{deep}", "nested"],
    ),  # fmt: skip
    "study: a report nested 100000 deep": (["study", "{deep}"], ["{deep}", "nested"]),
    "check: a report over 64 MiB": (["check", "{huge}", "--min-gain", "0"], ["{huge}", "64 MiB"]),
    "show: a report over 64 MiB": (["show", "{huge}"], ["{huge}", "64 MiB"]),
    "plot: a report over 64 MiB": (["plot", "{huge}", "-o", "{out}/f.png"], ["{huge}", "64 MiB"]),
    "study: a report over 64 MiB": (["study", "{huge}"], ["{huge}", "64 MiB"]),
    "convert --model a checkpoint": (
        ["convert", "{ft-pt}", "--model", "{zs}", "-o", "{out}/c.safetensors"],
        ["--model {zs}", "an open_clip name", "config JSON"],
    ),  # fmt: skip
    "--alphas: a list of 10001": (
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--alphas",
            ",".join(str(i / 10_000) for i in range(10_001)),
        ],
        ["--alphas", "10001", "10000"],
    ),  # fmt: skip
    "--alphas: a range of 10001": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "--alphas", "0:1:0.0001"],
        ["--alphas", "10001", "10000"],
    ),  # fmt: skip
    "a checkpoint that is a pipe": (["inspect", "{zs-fifo}"], ["{zs-fifo}", "not a regular file"]),
    "convert of a pipe": (
        ["convert", "{zs-fifo}", "-o", "{out}/c.safetensors"],
        ["{zs-fifo}", "not a regular file"],
    ),  # fmt: skip
    "-o a name with no room for its journal": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "-o", "{out}/" + "r" * 240 + ".json"],
        ["-o", "245 bytes", "at most 223"],
    ),  # fmt: skip
    "--format md with -o -": (
        ["inspect", "{zs}", "--format", "md", "-o", "-"],
        ["--format md", "-o -", "stdout"],
    ),  # fmt: skip
    "convert: a torch.save file cut in half": (
        ["convert", "{cut-pt}", "-o", "{out}/c.safetensors"],
        ["{cut-pt}", "not a readable pickle", "truncated or corrupt"],
    ),  # fmt: skip
    "convert --head of other features": (
        ["convert", "{ft-pt}", "--head", "{wide-head}", "-o", "{out}/c.safetensors"],
        ["--head {wide-head}", "(3, 7)", "32 dimensions"],
    ),  # fmt: skip
    "--classnames imagenet on classes that are not ImageNet's": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "--classnames", "imagenet"],
        ["{shifted}", "'red'", "not in --classnames imagenet"],
    ),  # fmt: skip
}
MADE = ("forged", "short", "zs-copy", "array", "metrics-gap", "wrong-type", "layer-gap",
        "baseline-list", "latin1-name", "short-webdataset", "fifo", "socket", "deep", "huge",
        "ft-pt", "zs-fifo", "cut-pt", "wide-head")  # fmt: skip


@pytest.mark.parametrize("case", EXIT_2)
def test_bad_input_exits_2_with_one_line_naming_it(given, tmp_path, case):
    (tmp_path / "out").mkdir()
    names = {name: str(path) for name, path in given.items()} | {"out": str(tmp_path / "out")}
    args, named = EXIT_2[case]
    needed = [m for m in MADE if any(f"{{{m}}}" in a for a in args)]
    names |= {m: str(make_input(tmp_path, given, m)) for m in needed}
    watched = {**given, **{m: Path(names[m]) for m in needed}}
    before = snapshot(watched)
    result = invoke(*(arg.format(**names) for arg in args))
    line = refused(result, *(n.format(**names) for n in named))
    assert "KeyError" not in line and "TypeError" not in line and "schema None" not in line
    assert snapshot(watched) == before
    assert not list((tmp_path / "out").iterdir())


# an integer option out of range: refused with the other options, before any checkpoint is
# read (the checkpoints named here do not exist: reading them first would say so instead)
PAIR = ["{gone}", "{gone}", "--ood", "{shifted}"]  # two checkpoints that do not exist
INTEGERS = {  # case -> (arguments, the flag named)
    "--seed -1 with --limit": (["interpolate", *PAIR, "--seed", "-1", "--limit", "5"], "--seed"),
    "study --seed -1": (["study", *PAIR, "--seed", "-1"], "--seed"),
    "demo --seed -1": (["demo", "--out", "{out}/demo", "--seed", "-1"], "--seed"),
    **{
        f"{flag} {value}": ([command, *PAIR[command == "sharpness" :], flag, value], flag)
        for command, flag, value in [
            ("interpolate", "--limit", "0"),
            ("layerwise", "--limit", "-3"),
            ("interpolate", "--batch-size", "0"),
            ("interpolate", "--block-images", "0"),
            ("interpolate", "--num-workers", "-1"),
            ("sharpness", "--iterations", "0"),
            ("stragglers", "--top-k", "0"),
            ("study", "--bootstrap", "0"),
            ("study", "--permutations", "0"),
        ]
    },
}


@pytest.mark.parametrize("case", INTEGERS)
def test_integer_options_are_checked_before_any_checkpoint(given, tmp_path, case):
    (tmp_path / "out").mkdir()
    names = {name: str(path) for name, path in given.items()}
    names |= {"out": str(tmp_path / "out"), "gone": str(tmp_path / "gone.safetensors")}
    args, flag = INTEGERS[case]
    before = snapshot(given)
    line = refused(invoke(*(arg.format(**names) for arg in args)), flag)
    assert "gone.safetensors" not in line
    assert snapshot(given) == before
    assert not list((tmp_path / "out").iterdir())


CONFIG_FILES = {  # case -> (file, its text, what the message names)
    "[tool] clipsharp = a string": (
        "pyproject.toml",
        '[tool]\nclipsharp = "yes"\n',
        ["pyproject.toml", "tool.clipsharp"],
    ),  # fmt: skip
    "tool = a string": ("pyproject.toml", 'tool = "x"\n', ["pyproject.toml", "tool = 'x'"]),
    "clipsharp.toml nested 100000 deep": (
        "clipsharp.toml",
        "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
        ["clipsharp.toml", "nested too deeply"],
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_broken_config_file_is_exit_2_for_every_command(given, tmp_path, monkeypatch, case):
    """Exit 2, not 1: ``check`` must not look like a failed gate."""
    name, text, named = CONFIG_FILES[case]
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    watched = {**given, "config": tmp_path / name}
    before = snapshot(watched)
    for args in (["check", given["interpolate"], "--min-gain", "0"], ["inspect", given["zs"]]):
        refused(invoke(*args), *named)
    assert snapshot(watched) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])


def test_config_file_of_the_wrong_type_names_file_and_key(given, tmp_path, monkeypatch):
    (tmp_path / "clipsharp.toml").write_text("limit = true\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("interpolate", given["zs"], given["ft"], "--ood", given["shifted"])
    refused(result, "clipsharp.toml", "limit = true", "whole number")


def test_a_full_disk_leaves_nothing_partial(given, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # a full disk cannot be had on demand: fsync, which every atomic write calls, reports one
    monkeypatch.setattr("clipsharp.files.os.fsync", full)
    result = invoke("inspect", given["zs"], "-o", tmp_path / "r.json", "--format", "json")
    refused(result, str(tmp_path / "r.json"), "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_demo_out_that_cannot_be_written(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke("demo", "--out", locked / "demo")
    refused(result, "--out", str(locked))
    assert not list(locked.iterdir())


# ----------------------------------------------------------------------------- messages

USAGE = {  # arguments -> what the one line names
    ("interpolate", "--bogus"): ["--bogus", "clipsharp interpolate --help"],
    ("interpolate", "zs.safetensors"): ["FINE_TUNED", "--help"],  # the usage line's metavar
    ("interpolate", "a", "b", "--limit", "abc"): ["--limit", "--help"],
    ("check", "r.json", "--min-gain", "x"): ["--min-gain", "--help"],
    ("no-such-command",): ["no-such-command", "clipsharp --help"],
}


@pytest.mark.parametrize("args", USAGE)
def test_usage_errors_are_one_line(args):
    refused(invoke(*args), *USAGE[args])


def test_convert_of_a_malicious_pickle_is_one_line(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"w": torch.zeros(2), "x": Payload()}, tmp_path / "evil.pt")
    before = file_sha256(tmp_path / "evil.pt")
    result = invoke("convert", tmp_path / "evil.pt", "-o", tmp_path / "out.safetensors")
    refused(result, "evil.pt", "entry 'x' is of type posix.system, not a tensor")
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out.safetensors").exists()
    assert file_sha256(tmp_path / "evil.pt") == before


# ----------------------------------------------------------------------------- interruption

# Ctrl-C cannot be timed from outside to land between the two writes: the public run_prune
# is wrapped to send it once the pruned weights are on disk
INTERRUPT = """
import os, signal, sys
import clipsharp.analyses.prune as prune
original = prune.run_prune

def interrupted(*args, **kwargs):  # Ctrl-C once the pruned weights are on disk
    done = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    signal.pause()
    return done

prune.run_prune = interrupted
from clipsharp.cli import main
sys.argv = ["clipsharp", *sys.argv[1:]]
main()
"""


@pytest.mark.slow  # a subprocess interrupted mid-run
def test_ctrl_c_in_prune_leaves_checkpoint_and_report_both_or_neither(given, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(given)
    args = ["prune", given["ft"], "--layers", "visual.block.0", "-o", out / "p.safetensors",
            "--report", out / "p.json"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPT, *map(str, args)],
        capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # whatever pytest's is
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert list(out.iterdir()) == []  # neither the checkpoint nor the report, nor a temporary
    assert snapshot(given) == before


def test_the_resume_journal_beside_o_is_not_an_input_either(given, tmp_path, monkeypatch):
    """-o R writes R.partial as it goes: that file is an output too."""
    monkeypatch.chdir(tmp_path)
    templates = tmp_path / "path.json.partial"
    templates.write_text("a photo of a {}.\n")
    watched = {**given, "templates": templates}
    before = snapshot(watched)
    result = invoke("interpolate", str(given["zs"]), str(given["ft"]), "--ood",
                    str(given["shifted"]), "--templates", str(templates), "--device", "cpu",
                    "-o", str(tmp_path / "path.json"))  # fmt: skip
    refused(result, str(templates), "choose a path")
    assert snapshot(watched) == before and not (tmp_path / "path.json").exists()


# ----------------------------------------------------------------------------- damaged images

BAD_IMAGES = {  # case -> (the folder made, the file the error names)
    "a truncated JPEG in an image folder": ("jpeg-folder", "{root}/green/1.jpg"),
    "a truncated PNG in an image folder": ("png-folder", "{root}/green/1.png"),
    "a truncated JPEG in a webdataset shard": (
        "webdataset",
        "{root}/test/0.tar member s0000001.jpg",
    ),
}


def damaged(root: Path, kind: str) -> Path:
    """Four images of which the second (class green) is cut to half its bytes."""
    from conftest import coloured_images

    if kind == "webdataset":
        from test_webdataset import truncate_member, write_webdataset

        write_webdataset(root, 4, seed=0, shards=1)
        truncate_member(root / "test" / "0.tar", "s0000001.jpg")
        return root
    images, labels = coloured_images(4, seed=0)
    suffix = ".jpg" if kind == "jpeg-folder" else ".png"
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / CLASSNAMES[label]).mkdir(parents=True, exist_ok=True)
        image.save(root / CLASSNAMES[label] / f"{i}{suffix}")
    bad = root / "green" / f"1{suffix}"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return root


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_a_damaged_image_is_named_or_skipped_and_counted(given, tmp_path, case):
    """Exit 2 naming the file (decoded while streaming: the last line, after the progress
    lines), or with --skip-bad-images a run over the others that counts it."""
    kind, named = BAD_IMAGES[case]
    root = damaged(tmp_path / kind, kind)
    before = snapshot({"data": root, **given})
    args = ["interpolate", given["zs"], given["ft"], "--ood", root, "--alphas", "0"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("clipsharp interpolate: error:") and "Traceback" not in result.output
    assert named.format(root=root) in line and "truncated" in line.lower() and "row" not in line
    skipped = invoke(*args, "--skip-bad-images", "-o", tmp_path / "r.json")
    assert skipped.exit_code == 0, skipped.output
    entry = json.loads((tmp_path / "r.json").read_text())["inputs"]["datasets"][0]
    assert entry["num_examples"] == 3 and entry["skipped_images"]["count"] == 1
    (tmp_path / "r.json").unlink()
    assert snapshot({"data": root, **given}) == before


def test_data_cache_never_serves_images_replaced_with_their_mtime_set_back(given, tmp_path):
    """Issue 23 item 4: images replaced by others (other bytes, sizes), ``touch -r`` back."""
    from PIL import Image

    root = damaged(tmp_path / "png-folder", "png-folder")
    (root / "green" / "1.png").unlink()  # (only whole images here)
    args = ["interpolate", given["zs"], given["ft"], "--ood", root, "--alphas", "0,1"]
    cache = ["--data-cache", tmp_path / "cache"]

    def path(*extra) -> list:
        out = tmp_path / "r.json"
        assert invoke(*args, *extra, "-o", out).exit_code == 0
        doc = json.loads(out.read_text())
        out.unlink()
        return [doc["inputs"]["datasets"][0]["fingerprint"], doc["results"]["path"]]

    first = path(*cache)
    for i, image in enumerate(sorted(root.glob("*/*.png"))):
        stat = image.stat()
        Image.new("RGB", (40 + i, 36), (250, 250, 250 - 80 * i)).save(image)
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached, fresh = path(*cache), path()
    assert cached == fresh and cached[0] != first[0]


# ----------------------------------------------------------------------------- issue 23


def test_demo_out_over_a_users_project_is_refused(tmp_path):
    """The README's own layout (proj/data/in_dist, proj/zero_shot.safetensors, ...) is a
    user's project, not a demo folder: nothing in it is replaced."""
    project = tmp_path / "proj"
    for name in ("data/in_dist/a.arrow", "data/shifted/a.arrow", "zero_shot.safetensors",
                 "study.json"):  # fmt: skip
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(name)
    before = snapshot({"project": project})
    line = refused(invoke("demo", "--out", project, "--quick"), f"--out {project}", "demo.json")
    assert "holds data, study.json, zero_shot.safetensors" in line
    assert snapshot({"project": project}) == before


def test_a_demo_folder_is_one_holding_its_record(tmp_path):
    from clipsharp.demo.build import check_demo_folder, demo_record

    empty, marked, building, other = (tmp_path / name for name in ("e", "m", "b", "o"))
    for folder in (empty, marked, building, other):
        folder.mkdir()
    (marked / "demo.json").write_text(json.dumps({"recipe_hash": "ab12", "seed": 0}))
    (marked / "reports").mkdir()
    (building / "demo.json").write_text(json.dumps({"recipe_hash": None}))
    (other / "demo.json").write_text(json.dumps({"name": "someone else's demo.json"}))
    for folder in (empty, marked, building, tmp_path / "new"):
        check_demo_folder(folder)  # accepted
    assert demo_record(marked)["recipe_hash"] == "ab12" and demo_record(other) is None
    with pytest.raises(Exception, match="holds demo.json and is not a clipsharp demo folder"):
        check_demo_folder(other)


def test_an_interrupted_demo_build_leaves_its_marker(tmp_path, monkeypatch):
    """The record is written, without a recipe hash, before the first file: a build stopped
    half-way is still the demo's folder, and is rebuilt (not reused) by the next run."""
    import clipsharp.demo.build as build

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "write_data", stopped)
    with pytest.raises(KeyboardInterrupt):
        build.build_demo(tmp_path / "demo", recipe=build.DemoRecipe.tiny())
    assert build.demo_record(tmp_path / "demo")["recipe_hash"] is None
    build.check_demo_folder(tmp_path / "demo")


def reader(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A thread that reads ``fifo`` to its end, as ``cat fifo`` would."""
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    thread.start()
    return thread, got


STREAMED = {  # case -> arguments writing into {stream}
    "inspect -o": ["inspect", "{zs}", "-o", "{stream}"],
    "interpolate -o (no journal beside it)": [
        "interpolate",
        "{zs}",
        "{ft}",
        "--ood",
        "{shifted}",
        "--alphas",
        "0,1",
        "--device",
        "cpu",
        "-o",
        "{stream}",
    ],  # fmt: skip
    "merge -o": ["merge", "{zs}", "{ft}", "--alpha", "0.5", "-o", "{stream}"],
    "prune -o": ["prune", "{ft}", "--layers", "visual.block.0", "-o", "{stream}"],
}


def streamed(given, stream: Path, case: str):
    names = {name: str(path) for name, path in given.items()} | {"stream": str(stream)}
    return invoke(*(arg.format(**names) for arg in STREAMED[case]))


def written_form(case: str, data: bytes) -> None:
    """What came through the stream is the whole report or checkpoint."""
    if case.startswith(("merge", "prune")):
        from safetensors.torch import load

        assert "visual.proj" in load(data)
    else:
        assert json.loads(data)["command"] == case.split()[0]


@pytest.mark.parametrize("case", STREAMED)
def test_o_into_a_fifo_writes_the_stream(given, tmp_path, case):
    folder = tmp_path / "out"
    folder.mkdir()
    fifo = folder / "r.fifo"
    os.mkfifo(fifo)
    before = snapshot(given)
    thread, got = reader(fifo)
    result = streamed(given, fifo, case)
    thread.join(10)  # the reader ends at the writer's close
    if thread.is_alive():  # no writer came (a failed run): let the reader see an end
        with contextlib.suppress(OSError):  # ENXIO: it closed its end in the meantime
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
    assert result.exit_code == 0, result.output
    written_form(case, got[0])
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in folder.iterdir()] == ["r.fifo"]  # no temporary, no journal
    assert snapshot(given) == before


@pytest.mark.parametrize("case", STREAMED)
def test_o_into_a_character_device_writes_into_it(given, tmp_path, case):
    folder = tmp_path / "out"
    folder.mkdir()
    null = folder / "null"
    try:  # the issue's `mknod fakedev/null c 1 3`: another /dev/null
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    before = snapshot(given)
    result = streamed(given, null, case)
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)
    assert [p.name for p in folder.iterdir()] == ["null"]
    assert snapshot(given) == before


def test_a_checkpoint_rewritten_after_it_is_read_changes_no_weight(given):
    """What a run uses is what it read, and the sha256 it reports is of those bytes: a file
    rewritten in place (``dd conv=notrunc``) after the read changes neither."""
    from clipsharp.core.checkpoint import load_checkpoint

    original = given["ft"].read_bytes()
    loaded = load_checkpoint(given["ft"])
    expected = {key: tensor.clone() for key, tensor in loaded.tensors.items()}
    with open(given["ft"], "r+b") as f:  # other weights, same size, same header
        f.seek(len(original) // 2)
        f.write(os.urandom(len(original) - len(original) // 2))
    assert loaded.sha256 == hashlib.sha256(original).hexdigest() != file_sha256(given["ft"])
    assert all(torch.equal(loaded.tensors[key], expected[key]) for key in expected)


TRUNCATED = """
import os, sys
from clipsharp.core.checkpoint import load_checkpoint
loaded = load_checkpoint(sys.argv[1])
os.truncate(sys.argv[1], 0)  # `cp` over it: truncated first
print(sum(float(t.double().sum()) for t in loaded.tensors.values() if t.is_floating_point()))
"""


def test_a_checkpoint_truncated_while_in_use_is_no_bus_error(given):
    from clipsharp.core.checkpoint import load_checkpoint

    total = sum(float(t.double().sum()) for t in load_checkpoint(given["ft"]).tensors.values()
                if t.is_floating_point())  # fmt: skip
    done = subprocess.run([sys.executable, "-c", TRUNCATED, str(given["ft"])],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7 (SIGBUS) under a mmap
    assert float(done.stdout) == pytest.approx(total, rel=1e-12)


CHANGES = {  # how a writer changes the file while it is read
    "rewritten in place": lambda path, size: _rewrite(path, size // 2, b"\x01" * 64),
    "truncated": lambda path, size: os.truncate(path, size // 2),
    "grown": lambda path, size: _rewrite(path, size, b"\0" * 64),
}


def _rewrite(path: Path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)
    stamp = path.stat().st_mtime_ns + 1_000_000  # a clock tick later, as a writer's would be
    os.utime(path, ns=(stamp, stamp))


@pytest.mark.parametrize("change", CHANGES)
def test_a_checkpoint_changed_while_it_is_read_exits_2(given, monkeypatch, change):
    import clipsharp.core.checkpoint as checkpoint

    size, calls = given["ft"].stat().st_size, []

    class Hash:  # a writer strikes between the first and second chunks the reader hashes
        def __init__(self):
            self.inner = hashlib.sha256()

        def update(self, data):
            calls.append(len(data))
            if len(calls) == 1:
                CHANGES[change](given["ft"], size)
            self.inner.update(data)

        def hexdigest(self):
            return self.inner.hexdigest()

    monkeypatch.setattr(checkpoint, "READ_CHUNK", 4096)
    monkeypatch.setattr(checkpoint, "hashlib", SimpleNamespace(sha256=Hash))
    result = invoke("inspect", given["ft"])
    refused(result, str(given["ft"]), "changed while it was read")


@pytest.fixture()
def full_disk(tmp_path) -> Path:
    """A 1 MiB tmpfs filled to its last byte by one file, ``filler``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
    for size in (1 << 16, 1 << 10, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    os.close(fd)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


FULL_DISK = {  # case -> (arguments, the file the message names)
    "merge -o": (
        ["merge", "{zs}", "{ft}", "--alpha", "0.5", "-o", "{full}/m.safetensors"],
        "{full}/m.safetensors",
    ),  # fmt: skip
    "prune -o": (
        ["prune", "{ft}", "--layers", "visual.block.0", "-o", "{full}/p.safetensors"],
        "{full}/.p.safetensors.pending",
    ),  # fmt: skip
    "convert -o": (["convert", "{ft}", "-o", "{full}/c.safetensors"], "{full}/c.safetensors"),
    "inspect -o (a report)": (
        ["inspect", "{zs}", "-o", "{full}/r.json", "--format", "json"],
        "{full}/r.json",
    ),
    "prune --report": (
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{full}/p.json",
            "--format",
            "json",
        ],
        "{full}/p.json",
    ),  # fmt: skip
    "interpolate's journal": (
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--alphas",
            "0,1",
            "--device",
            "cpu",
            "-o",
            "{full}/r.json",
        ],
        "{full}/r.json.partial",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", FULL_DISK)
def test_a_full_disk_exits_2_naming_the_file_and_leaves_nothing(given, tmp_path, full_disk,
                                                                 case):  # fmt: skip
    (tmp_path / "out").mkdir()
    names = {name: str(path) for name, path in given.items()}
    names |= {"full": str(full_disk), "out": str(tmp_path / "out")}
    args, named = FULL_DISK[case]
    before = snapshot(given)
    result = invoke(*(arg.format(**names) for arg in args))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]  # after progress
    assert errors == result.stderr.strip().splitlines()[-1:], result.stderr
    assert f"cannot write {named.format(**names)}: No space left on device" in errors[0]
    assert "internal error" not in errors[0] and "Traceback" not in result.output
    assert [p.name for p in full_disk.iterdir()] == ["filler"]
    assert not list((tmp_path / "out").iterdir())
    assert snapshot(given) == before


def test_a_run_sweeps_the_stale_temporary_files_of_its_own_output(given, tmp_path):
    """Temporary files a killed run left for -o r.json go on the next write of r.json; a live
    writer's (locked), another output's, a user's look-alikes and symlinks stay."""
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    (out / "user.txt").write_text("mine")
    stale = [out / ".r.json.abcd1234.tmp", out / ".r.json.q_9z0000.tmp"]
    stale[0].write_text("{half a report")
    stale[1].mkdir()  # a staging folder
    (stale[1] / "inner").write_text("x")
    kept = [out / ".r.json.live0000.tmp", out / ".r.json.tmp", out / ".r.json.abc123.tmp",
            out / ".other.json.abcd1234.tmp", out / "r.json.abcd1234.tmp"]  # fmt: skip
    for path in kept:
        path.write_text("kept")
    os.symlink(out / "user.txt", out / ".r.json.link0000.tmp")
    live = os.open(kept[0], os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)  # another run writing r.json now
    try:
        result = invoke("inspect", given["zs"], "-o", out / "r.json")
    finally:
        os.close(live)
    assert result.exit_code == 0, result.output
    left = sorted(p.name for p in out.iterdir())
    expected = ["r.json", "user.txt", ".r.json.link0000.tmp", *(p.name for p in kept)]
    assert left == sorted(expected)
    assert (out / "user.txt").read_text() == "mine"


def test_prune_removes_a_pending_checkpoint_a_killed_prune_left(given, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".p.safetensors.pending").write_bytes(b"half a checkpoint")
    result = invoke("prune", given["ft"], "--layers", "visual.block.0", "-o", out / "p.safetensors")
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["p.safetensors"]


# SIGTERM (what CI runners send on a timeout) at the worst moment of each write: the function
# named is wrapped to send it to the process once it returned
TERMINATE = """
import importlib, os, signal, sys, time
module, _, path = sys.argv[1].partition(":")  # module:attribute[.attribute]
owner = importlib.import_module(module)
*outer, name = path.split(".")
for part in outer:
    owner = getattr(owner, part)
original = getattr(owner, name)

def terminated(*args, **kwargs):
    done = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
    return done

setattr(owner, name, terminated)
from clipsharp.cli import main
sys.argv = ["clipsharp", *sys.argv[2:]]
main()
"""

TERMINATED = {  # case -> (the function after which SIGTERM comes, arguments, files left in out)
    "merge while its temporary file is written": (
        "clipsharp.core.checkpoint:write_tensors",
        ["merge", "{zs}", "{ft}", "--alpha", "0.5", "-o", "{out}/m.safetensors"],
        [],
    ),  # fmt: skip
    "merge once its temporary file is written": (
        "clipsharp.files:honour_umask",
        ["merge", "{zs}", "{ft}", "--alpha", "0.5", "-o", "{out}/m.safetensors"],
        [],
    ),  # fmt: skip
    "prune with its checkpoint pending": (
        "clipsharp.analyses.prune:run_prune",
        [
            "prune",
            "{ft}",
            "--layers",
            "visual.block.0",
            "-o",
            "{out}/p.safetensors",
            "--report",
            "{out}/p.json",
        ],
        [],
    ),  # fmt: skip
    "interpolate with its journal written": (
        "clipsharp.core.journal:Journal._write",
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--alphas",
            "0,0.5,1",
            "--device",
            "cpu",
            "-o",
            "{out}/r.json",
        ],
        ["r.json.partial"],  # kept for --resume, as after Ctrl-C
    ),  # fmt: skip
}


@pytest.mark.slow  # a subprocess terminated mid-run
@pytest.mark.parametrize("case", TERMINATED)
def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(given, tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    names = {name: str(path) for name, path in given.items()} | {"out": str(out)}
    target, args, left = TERMINATED[case]
    args = [arg.format(**names) for arg in args]
    before = snapshot(given)
    done = subprocess.run([sys.executable, "-c", TERMINATE, target, *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "clipsharp: terminated"
    assert sorted(p.name for p in out.iterdir()) == left
    assert snapshot(given) == before
    if left:  # the journal serves --resume
        resumed = invoke(*args, "--resume")
        assert resumed.exit_code == 0, resumed.output
        assert [p.name for p in out.iterdir()] == ["r.json"]


# ----------------------------------------------------------------------------- stdout


def clipsharp_process(
    args, tmp_path: Path, env_extra: dict | None = None, **streams
) -> subprocess.CompletedProcess:
    """``clipsharp ARGS`` in a process of its own (a pipe closed early cannot be had in
    this one), its stderr captured; ``streams``: stdout and preexec_fn for subprocess."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "NO_COLOR": "1",
           **(env_extra or {})}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "clipsharp", *map(str, args)], stderr=subprocess.PIPE,
        text=True, timeout=300, cwd=tmp_path, env=env, **streams,
    )  # fmt: skip


def closed_pipe() -> int:
    """The writing end of a pipe whose reader is gone: what ``| true`` or ``| head`` leave."""
    read, written = os.pipe()
    os.close(read)
    return written


PIPES = {  # case -> (arguments, the exit code the run earned, a file it must write)
    "interpolate -o - | true": (
        [
            "interpolate",
            "{zs}",
            "{ft}",
            "--ood",
            "{shifted}",
            "--alphas",
            "0,1",
            "--device",
            "cpu",
            "-o",
            "-",
        ],
        0,
        None,
    ),  # fmt: skip
    "check --format json | true, passed": (
        ["check", "{interpolate}", "--min-gain", "0", "--format", "json"],
        0,
        None,
    ),  # fmt: skip
    "check --format json | true, failed": (
        ["check", "{interpolate}", "--min-gain", "0.5", "--format", "json"],
        1,
        None,
    ),  # fmt: skip
    "--format json -o FILE | true": (
        ["inspect", "{zs}", "--format", "json", "-o", "{out}/pipe.json"],
        0,
        "pipe.json",
    ),  # fmt: skip
    "show --format md | true": (["show", "{layerwise}", "--format", "md"], 0, None),
}


@pytest.mark.slow  # a process of its own for each
@pytest.mark.parametrize("case", PIPES)
def test_a_closed_pipe_ends_quietly_with_the_exit_code_of_the_run(given, tmp_path, case):
    (tmp_path / "out").mkdir()
    names = {name: str(path) for name, path in given.items()} | {"out": str(tmp_path / "out")}
    args, code, written = PIPES[case]
    before = snapshot(given)
    stdout = closed_pipe()
    try:
        done = clipsharp_process([a.format(**names) for a in args], tmp_path, stdout=stdout)
    finally:
        os.close(stdout)
    assert done.returncode == code, done.stderr
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert snapshot(given) == before
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == ([written] if written else [])
    if written:  # a closed stdout never stops a file output
        assert json.loads((tmp_path / "out" / written).read_text())["command"] == "inspect"


@pytest.mark.slow  # a process of its own for each
def test_a_closed_stdout_is_refused_before_any_work(given, tmp_path):
    for args in (["inspect", given["zs"], "-o", "-"], ["check", given["interpolate"],
                 "--min-gain", "0", "--format", "json"]):  # fmt: skip
        done = clipsharp_process(args, tmp_path, preexec_fn=lambda: os.close(1))  # >&-
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "stdout, which is closed" in line and "-o FILE" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.slow  # a process of its own
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_stdout_is_named(given, tmp_path):
    with open("/dev/full", "w") as full:
        done = clipsharp_process(["inspect", given["zs"], "-o", "-"], tmp_path, stdout=full)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "cannot write to stdout (No space left on device)" in line
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


# ----------------------------------------------------------------------------- terminal

# what a hostile report can hold in a name: clear the screen, retitle the window, ring, a C1
# CSI, and rich markup
HOSTILE = "\x1b[2J\x1b]0;pwned\x07[bold]x[/bold]\x9bq"
ESCAPED = "\\x1b[2J\\x1b]0;pwned"  # as it must print: the escapes spelled out


def hostile_report(files: dict, tmp_path: Path, source: str = "interpolate") -> Path:
    """A report of ``source`` whose dataset is named HOSTILE."""
    text = files[source].read_text().replace('"shifted"', json.dumps(HOSTILE))
    path = tmp_path / f"hostile-{source}.json"
    path.write_text(text)
    return path


TERMINAL = {  # case -> arguments (the hostile report as {report})
    "show": ["show", "{report}"],
    "show --format md": ["show", "{report}", "--format", "md"],
    "show a layerwise report": ["show", "{layerwise}"],
    "check": ["check", "{report}", "--min-gain", "0.5"],
    "check --format md": ["check", "{report}", "--min-gain", "0.5", "--format", "md"],
    "check --require a missing field": ["check", "{report}", "--require", "nothing>0"],
    "study: the error names the field": ["study", "{broken}"],
}


@pytest.mark.parametrize("case", TERMINAL)
def test_control_characters_from_a_report_are_printed_escaped(given, tmp_path, case):
    report = hostile_report(given, tmp_path)
    broken = json.loads(report.read_text())
    del broken["summary"][HOSTILE]["gain"]
    names = {"report": report, "layerwise": hostile_report(given, tmp_path, "layerwise"),
             "broken": write(tmp_path / "broken.json", broken)}  # fmt: skip
    result = invoke(*(arg.format(**names) for arg in TERMINAL[case]))
    printed = result.stdout + result.stderr
    assert result.exit_code in (0, 1, 2), printed
    assert not {"\x1b", "\x07", "\x9b"} & set(printed), printed
    assert ESCAPED in printed and "\\x9bq" in printed
    assert "[bold]x[/bold]" in printed  # markup shown as written, never applied


@pytest.mark.slow  # a run on a dataset folder of that name
def test_control_characters_in_a_dataset_name_are_printed_escaped(given, tmp_path):
    name = "s\x1b]0;pwned\x07\x9bq"  # no [ ]: a folder name with them reads as a glob
    named = shutil.copytree(given["shifted"], tmp_path / "data" / name)
    result = invoke("interpolate", given["zs"], given["ft"], "--ood", named, "--alphas", "0,1",
                    "--device", "cpu", "--format", "md", "-o", tmp_path / "r.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = result.stdout + result.stderr
    assert not {"\x1b", "\x07", "\x9b"} & set(printed), printed
    assert "\\x1b]0;pwned" in printed and "\\x9bq" in printed  # (rich drops the BEL)
    assert name in json.loads((tmp_path / "r.json").read_text())["summary"]  # as spelled


# ----------------------------------------------------------------------------- environment


@pytest.fixture()
def read_only(tmp_path):
    """A read-only folder: a read-only tmpfs as root (who writes anywhere else), else 0500."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow  # a process of its own (datasets reads HF_HOME once, at import)
def test_a_read_only_hf_home_is_named(given, tmp_path, read_only):
    from conftest import coloured_images

    images, labels = coloured_images(8, seed=4)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "folder" / CLASSNAMES[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "folder" / CLASSNAMES[label] / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{CLASSNAMES[label]}/{i}.png", "label": label}))
    # a metadata file: read by datasets' imagefolder, which caches (a plain image folder is
    # listed by clipsharp and needs no cache: it runs with HF_HOME read-only)
    (tmp_path / "folder" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    given = {**given, "folder": tmp_path / "folder"}
    before = snapshot(given)
    done = clipsharp_process(
        ["interpolate", given["zs"], given["ft"], "--ood", "folder", "--device", "cpu"],
        tmp_path, stdout=subprocess.DEVNULL, env_extra={"HF_HOME": str(read_only)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "HF_HOME" in line and str(read_only) in line and "cannot be written" in line
    assert snapshot(given) == before

"""Hostile invocations (issue 11): no input is ever destroyed, every bad input exits 2 with one
line naming it, and an interrupted prune leaves its checkpoint and report both or neither.

Each case runs on private copies of the tiny pair and asserts that every input file's sha256
and every input folder's listing are what they were before.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

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
        elif path.exists():  # a FIFO or a device: hashing it would read (or block on) it
            state[str(path)] = path.stat().st_mode
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
    if name == "fifo":  # what <(cat zs.safetensors) gives: a pipe, readable once
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
    "a checkpoint that is a pipe": (["inspect", "{fifo}"], ["{fifo}", "not a regular file"]),
    "convert of a pipe": (
        ["convert", "{fifo}", "-o", "{out}/c.safetensors"],
        ["{fifo}", "not a regular file"],
    ),  # fmt: skip
    "-o a name with no room for its journal": (
        ["interpolate", "{zs}", "{ft}", "--ood", "{shifted}", "-o", "{out}/" + "r" * 240 + ".json"],
        ["-o", "245 bytes", "at most 223"],
    ),  # fmt: skip
    "--format md with -o -": (
        ["inspect", "{zs}", "--format", "md", "-o", "-"],
        ["--format md", "-o -", "stdout"],
    ),  # fmt: skip
}
MADE = ("forged", "short", "zs-copy", "array", "metrics-gap", "wrong-type", "layer-gap",
        "baseline-list", "deep", "huge", "ft-pt", "fifo")  # fmt: skip


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
INTEGERS = {  # case -> (arguments, the flag named)
    "--seed -1 with --limit": (
        ["interpolate", "{gone}", "{gone}", "--ood", "{shifted}", "--seed", "-1", "--limit", "5"],
        "--seed",
    ),  # fmt: skip
    "study --seed -1": (
        ["study", "{gone}", "{gone}", "--ood", "{shifted}", "--seed", "-1"],
        "--seed",
    ),  # fmt: skip
    "demo --seed -1": (["demo", "--out", "{out}/demo", "--seed", "-1"], "--seed"),
    "--limit 0": (
        ["interpolate", "{gone}", "{gone}", "--ood", "{shifted}", "--limit", "0"],
        "--limit",
    ),  # fmt: skip
    "--limit -3": (
        ["layerwise", "{gone}", "{gone}", "--ood", "{shifted}", "--limit", "-3"],
        "--limit",
    ),  # fmt: skip
    "--batch-size 0": (
        ["interpolate", "{gone}", "{gone}", "--ood", "{shifted}", "--batch-size", "0"],
        "--batch-size",
    ),  # fmt: skip
    "--block-images 0": (
        ["interpolate", "{gone}", "{gone}", "--ood", "{shifted}", "--block-images", "0"],
        "--block-images",
    ),  # fmt: skip
    "--num-workers -1": (
        ["interpolate", "{gone}", "{gone}", "--ood", "{shifted}", "--num-workers", "-1"],
        "--num-workers",
    ),  # fmt: skip
    "--iterations 0": (
        ["sharpness", "{gone}", "--ood", "{shifted}", "--iterations", "0"],
        "--iterations",
    ),  # fmt: skip
    "--top-k 0": (
        ["stragglers", "{gone}", "{gone}", "--ood", "{shifted}", "--top-k", "0"],
        "--top-k",
    ),  # fmt: skip
    "--bootstrap 0": (
        ["study", "{gone}", "{gone}", "--ood", "{shifted}", "--bootstrap", "0"],
        "--bootstrap",
    ),  # fmt: skip
    "--permutations 0": (
        ["study", "{gone}", "{gone}", "--ood", "{shifted}", "--permutations", "0"],
        "--permutations",
    ),  # fmt: skip
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
    refused(result, "evil.pt", "clipsharp will not run")
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
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "folder" / CLASSNAMES[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "folder" / CLASSNAMES[label] / f"{i}.png")
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

"""The command line through CliRunner: reports, config files, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY_CONFIG, invoke, pair_args, save_checkpoint, tiny_model
from safetensors.torch import load_file

from clipsharp import __version__
from clipsharp.files import file_sha256


def interpolate_args(pair, *extra):
    return ["interpolate", *pair_args(pair, *extra)]


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"clipsharp {__version__}"
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("interpolate", "inspect", "demo"):
        assert command in result.stdout


def test_python_dash_m_runs_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "clipsharp", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"clipsharp {__version__}"


def test_help_does_not_import_torch():
    code = "import sys, clipsharp.cli; print('torch' in sys.modules, 'open_clip' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_report_on_stdout_with_dash(pair):
    result = invoke(*interpolate_args(pair, "--alphas", "0,0.5,1", "-o", "-"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["command"] == "interpolate"
    assert [p["alpha"] for p in doc["results"]["path"]] == [0.0, 0.5, 1.0]
    assert set(doc["summary"]) == {"in_dist", "shifted"}
    assert "shifted" in result.stderr and "gain" in result.stderr  # the summary table


def test_report_to_file_and_same_numbers_twice(pair, tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert invoke(*interpolate_args(pair, "--alphas", "0,1", "-o", first)).exit_code == 0
    assert invoke(*interpolate_args(pair, "--alphas", "0,1", "-o", second)).exit_code == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    for doc in (a, b):
        doc.pop("created"), doc.pop("timing")
    assert a == b
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_config_file_supplies_datasets_and_flags_override(pair, tmp_path, monkeypatch):
    (tmp_path / "clipsharp.toml").write_text(
        f'id = "{pair.in_dist}"\nood = ["{pair.shifted}"]\ndevice = "cpu"\n'
        '[interpolate]\nalphas = "0,0.5,1"\nbatch-size = 5\n'
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("interpolate", pair.zero_shot, pair.fine_tuned, "-o", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["config"]["alphas"] == [0.0, 0.5, 1.0] and doc["config"]["batch_size"] == 5
    assert [d["role"] for d in doc["inputs"]["datasets"]] == ["id", "ood"]
    result = invoke("interpolate", pair.zero_shot, pair.fine_tuned, "--alphas", "0,1", "-o", "-")
    assert json.loads(result.stdout)["config"]["alphas"] == [0.0, 1.0]


def test_pyproject_tool_table_and_show_config(pair, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.clipsharp]\nbatch-size = 9\nood = ["x"]\n')
    monkeypatch.chdir(tmp_path)
    result = invoke("interpolate", "a.safetensors", "b.safetensors", "--seed", "4", "--show-config")
    assert result.exit_code == 0, result.output
    options = json.loads(result.stdout)["options"]
    assert options["batch-size"] == {"value": 9, "from": "config file"}
    assert options["ood"] == {"value": ["x"], "from": "config file"}
    assert options["seed"] == {"value": 4, "from": "flag"}
    assert options["precision"] == {"value": "fp32", "from": "default"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("batch-sise = 3\n", "'batch-sise' is not an option"),
        ("[interpolat]\nseed = 1\n", "[interpolat] is not a clipsharp command"),
        ("[inspect]\nalphas = '0,1'\n", "[inspect] has no option 'alphas'"),
        ("seed = \n", "not valid TOML"),
    ],
)
def test_bad_config_file(tmp_path, monkeypatch, content, message):
    (tmp_path / "clipsharp.toml").write_text(content)
    monkeypatch.chdir(tmp_path)
    result = invoke("interpolate", "a.safetensors", "b.safetensors")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def _mismatched(tmp_path, pair):
    other = json.loads(json.dumps(TINY_CONFIG))
    other["vision_cfg"]["width"] = 32
    from open_clip.model import CLIP

    return save_checkpoint(tmp_path / "other.safetensors", CLIP(**other).state_dict(), other)


def _truncated(tmp_path, pair):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(pair.fine_tuned.read_bytes()[:-1000])
    return path


def _no_metadata(tmp_path, pair):
    """Neither checkpoint says its architecture (one that does would serve for both)."""
    zero_shot = save_checkpoint(tmp_path / "zs.safetensors", load_file(str(pair.zero_shot)), None)
    return zero_shot, save_checkpoint(
        tmp_path / "bare.safetensors", load_file(str(pair.fine_tuned)), None
    )


def _nan(tmp_path, pair):
    state = load_file(str(pair.fine_tuned))
    state["visual.proj"][0, 0] = float("nan")
    return save_checkpoint(tmp_path / "nan.safetensors", state)


def _pickle(tmp_path, pair):
    path = tmp_path / "ft.pt"
    torch.save(load_file(str(pair.fine_tuned)), path)
    return path


def _lying_header(tmp_path, pair):
    """A header whose offsets claim more bytes than the file holds."""
    import struct

    data = pair.fine_tuned.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    key = next(k for k in header if k != "__metadata__")
    start, stop = header[key]["data_offsets"]
    header[key]["data_offsets"] = [start, stop + 4096]
    raw = json.dumps(header).encode()
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
    return path


def _not_clip(tmp_path, pair):
    """Not a CLIP, though its metadata claims the tiny architecture."""
    path = save_checkpoint(tmp_path / "resnet.safetensors", {"fc.weight": torch.ones(2, 2)})
    other = save_checkpoint(tmp_path / "resnet-ft.safetensors", {"fc.weight": torch.zeros(2, 2)})
    return path, other  # two files: one file twice is refused before any key is read


def _dataset(tmp_path, rows, features=None):
    import datasets

    path = tmp_path / "data"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return path


def _no_labels(tmp_path, pair):
    from conftest import coloured_images

    return ["--ood", _dataset(tmp_path, {"image": coloured_images(4, 0)[0]})]


def _empty(tmp_path, pair):
    import datasets
    from conftest import CLASSNAMES, coloured_images

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES)}
    )
    images, labels = coloured_images(4, 0)
    rows = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    rows.filter(lambda row: False).save_to_disk(str(tmp_path / "empty"))
    return ["--ood", tmp_path / "empty"]


def _labels_out_of_range(tmp_path, pair):
    from conftest import coloured_images

    images, labels = coloured_images(8, 0)  # labels 0..3
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\n")
    path = _dataset(tmp_path, {"image": images, "label": labels})
    return ["--ood", path, "--classnames", names]


@pytest.mark.parametrize(
    ("make", "extra", "expected"),
    [
        (_mismatched, [], "do not match at visual"),
        (_truncated, [], "cut.safetensors is not a readable safetensors file"),
        (_no_metadata, [], "cannot tell the architecture of"),
        (_nan, [], "nan.safetensors has NaN or Inf values in visual.proj"),
        (_pickle, [], "ft.pt is a pickled PyTorch checkpoint"),
        (_lying_header, [], "lying.safetensors is not a readable safetensors file"),
        (_not_clip, [], "resnet.safetensors has no key"),
        (_no_labels, None, "no ClassLabel"),
        (_empty, None, "no examples"),
        (_labels_out_of_range, None, "lists 2 names but the dataset has 4 classes"),
        (None, ["-o", "/no/such/folder/r.json"], "does not exist"),
        (None, ["--device", "tpu"], "--device 'tpu'"),
        (None, ["--exclude", "["], "--exclude '[' is not a valid regex"),
        (None, ["--limit", "0"], "--limit must be a positive number"),
        (None, ["--num-workers", "-1"], "--num-workers must be 0 or more"),
        (None, ["--batch-size", "0"], "--batch-size must be at least 1"),
        (None, ["--model", "NoSuchNet-B-99"], "unknown architecture 'NoSuchNet-B-99'"),
        (None, ["--ood", "/no/such/folder"], "/no/such/folder"),
        (None, ["--alphas", "0,2"], "outside [0, 1]"),
        (None, ["--precision", "fp8"], "--precision 'fp8' is unknown"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(pair, tmp_path, make, extra, expected):
    made = make(tmp_path, pair) if make and extra is not None else pair.fine_tuned
    if extra is None:  # the maker gives dataset arguments
        extra = make(tmp_path, pair)
    zero_shot, fine_tuned = made if isinstance(made, tuple) else (pair.zero_shot, made)
    report = tmp_path / "report.json"
    args = ["interpolate", zero_shot, fine_tuned, "--id", pair.in_dist, "--device", "cpu"]
    result = invoke(*args, *extra, *([] if "-o" in extra else ["-o", report]))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert not report.exists()


def test_nonfinite_weights_allowed_on_request(pair, tmp_path):
    nan = _nan(tmp_path, pair)
    result = invoke("inspect", nan, "--allow-nonfinite", "-o", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the NaN checkpoint itself, read whole
    assert doc["inputs"]["checkpoints"]["model"]["sha256"] == file_sha256(nan)
    assert doc["summary"]["parameters"] == sum(t.numel() for t in load_file(str(nan)).values())


def test_inspect_one_and_two_checkpoints(pair):
    one = invoke("inspect", pair.fine_tuned, "-o", "-")
    assert one.exit_code == 0, one.output
    doc = json.loads(one.stdout)
    layers = [row["layer"] for row in doc["results"]["layers"]]
    assert layers == ["visual.embed", "visual.block.0", "visual.block.1", "visual.head",
                      "text.embed", "text.block.0", "text.head", "logit_scale"]  # fmt: skip
    assert doc["summary"]["parameters"] == sum(
        p.numel() for p in tiny_model().state_dict().values()
    )
    two = json.loads(invoke("inspect", pair.zero_shot, pair.fine_tuned, "-o", "-").stdout)
    zs, ft = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    row = next(r for r in two["results"]["layers"] if r["layer"] == "visual.head")
    diff = sum(float((ft[k].double() - zs[k].double()).pow(2).sum()) for k in row["tensors"])
    base = sum(float(zs[k].double().pow(2).sum()) for k in row["tensors"])
    assert row["relative_change"] == pytest.approx((diff / base) ** 0.5)
    text = next(r for r in two["results"]["layers"] if r["layer"] == "text.block.0")
    assert text["relative_change"] == 0.0


def test_internal_errors_exit_3_without_traceback(pair, monkeypatch):
    import clipsharp.analyses.inspect

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    # a bug cannot be asked for through the CLI: the public run_inspect is made to raise one
    monkeypatch.setattr(clipsharp.analyses.inspect, "run_inspect", broken)
    result = invoke("inspect", pair.fine_tuned)
    assert result.exit_code == 3
    assert (
        "internal error: RuntimeError: boom" in result.stderr and "Traceback" not in result.output
    )


def test_format_md_and_json(pair, tmp_path):
    md = invoke(*interpolate_args(pair, "--alphas", "0,1", "--format", "md"))
    assert md.exit_code == 0, md.output
    rows = [line for line in md.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| dataset | role |") and len(rows) == 3  # header + 2 datasets
    assert "|---|---|---:|" in md.stdout and "{" not in md.stdout  # a table, no JSON
    report = tmp_path / "r.json"
    js = invoke(*interpolate_args(pair, "--alphas", "0,1", "--format", "json", "-o", report))
    assert json.loads(js.stdout) == json.loads(report.read_text())
    bad = invoke(*interpolate_args(pair, "--format", "xml"))
    assert bad.exit_code == 2 and "--format 'xml'" in bad.stderr


def test_public_api_names_resolve():
    import importlib

    import clipsharp

    for name in (n for n in clipsharp.__all__ if n != "__version__"):
        found = getattr(clipsharp, name)
        assert found.__name__ == name, name  # the object of that name, not another
        assert found.__module__.startswith("clipsharp."), (name, found.__module__)
        assert getattr(importlib.import_module(found.__module__), name) is found, name


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(pair):
    result = invoke(*interpolate_args(pair)[:-2], "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU is available; use --device cpu" in result.stderr

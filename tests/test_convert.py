"""``convert``: pickles to safetensors through weights_only loading, refusals, provenance."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG, invoke
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clipsharp.core.models import Architecture


@pytest.fixture(scope="module")
def state(pair) -> dict[str, torch.Tensor]:
    return load_file(str(pair.fine_tuned))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def ran_the_payload(marker: str) -> None:
    """Called only if a pickle's objects were executed on loading."""
    Path(marker).write_text("executed")


class Payload:
    """An arbitrary object: unpickling it calls ran_the_payload."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return ran_the_payload, (self.marker,)


class TrainingState(collections.OrderedDict):
    """A state_dict held in a custom class (pickled as a global, like any class)."""


@pytest.mark.parametrize(
    ("wrap", "wrapper", "stripped"),
    [
        (lambda s: s, None, False),
        (lambda s: {"state_dict": s, "epoch": 3, "optimizer": {"lr": 0.1}}, "state_dict", False),
        (lambda s: {"model": {f"module.{k}": v for k, v in s.items()}}, "model", True),
        (lambda s: collections.OrderedDict(s), None, False),
    ],
    ids=["plain", "state_dict", "module-prefix", "ordered-dict"],
)
def test_round_trip_is_bit_identical(state, config_file, tmp_path, wrap, wrapper, stripped):
    source, output = tmp_path / "ft.pt", tmp_path / "ft.safetensors"
    torch.save(wrap(state), source)
    result = invoke("convert", source, "-o", output, "--model", config_file)
    assert result.exit_code == 0, result.output
    converted = load_file(str(output))
    assert converted.keys() == state.keys()
    for key, tensor in state.items():
        assert converted[key].dtype == tensor.dtype
        assert converted[key].numpy().tobytes() == tensor.numpy().tobytes(), key
    meta = metadata(output)
    assert json.loads(meta["clipsharp.model_config"]) == TINY_CONFIG
    assert meta["clipsharp.operation"] == "convert" and meta["clipsharp.source"] == "ft.pt"
    assert meta["clipsharp.source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    parameters = json.loads(meta["clipsharp.parameters"])
    assert parameters["wrapper"] == wrapper and parameters["stripped_prefix"] is stripped


def test_converted_pair_works_in_every_command_without_model(pair, state, config_file, tmp_path):
    """open_clip_config.json beside the input stands for --model; the output needs neither."""
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG}))
    zero_shot = load_file(str(pair.zero_shot))
    torch.save({"state_dict": {f"module.{k}": v for k, v in zero_shot.items()}}, tmp_path / "zs.pt")
    torch.save(state, tmp_path / "ft.pt")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("zs", "ft"):
        result = invoke("convert", tmp_path / f"{name}.pt", "-o", out / f"{name}.safetensors")
        assert result.exit_code == 0, result.output
    inspected = invoke("inspect", out / "ft.safetensors", "-o", "-")
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.stdout)["inputs"]["architecture"]["source"] == "metadata"
    ends = {"converted": (out / "zs.safetensors", out / "ft.safetensors"),
            "original": (pair.zero_shot, pair.fine_tuned)}  # fmt: skip
    args = ["--ood", pair.shifted, "--alphas", "0,1", "--device", "cpu", "-o", "-"]
    runs = {name: invoke("interpolate", *paths, *args) for name, paths in ends.items()}
    converted, original = runs["converted"], runs["original"]
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.stdout)["results"] == json.loads(original.stdout)["results"]


def test_safetensors_input_is_stamped_with_its_architecture(pair, config_file, tmp_path):
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(pair.fine_tuned)), str(bare), metadata={"format": "pt"})
    assert invoke("inspect", bare).exit_code == 2  # no architecture yet
    output = tmp_path / "stamped.safetensors"
    assert invoke("convert", bare, "-o", output, "--model", config_file).exit_code == 0
    assert metadata(output)["format"] == "pt"
    inspected = invoke("inspect", output, "-o", "-")
    assert inspected.exit_code == 0, inspected.output
    architecture = json.loads(inspected.stdout)["inputs"]["architecture"]
    assert architecture["source"] == "metadata"  # the stamp, not the flag


def test_named_architecture_is_stored_by_name():
    named = Architecture("ViT-B-32", {"embed_dim": 512}, {"mean": [0.5]}, "--model")
    assert named.metadata() == {"clipsharp.model": "ViT-B-32"}
    custom = Architecture("custom", TINY_CONFIG, {"mean": [0.5, 0.5, 0.5]}, "--model")
    stored = json.loads(custom.metadata()["clipsharp.model_config"])
    assert stored == {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5]}}


def _payload(tmp_path, state):
    torch.save(
        {"state_dict": state, "hook": Payload(str(tmp_path / "executed"))}, tmp_path / "in.pt"
    )
    return tmp_path / "in.pt"


def _custom_class(tmp_path, state):
    torch.save(TrainingState(state), tmp_path / "in.pt")
    return tmp_path / "in.pt"


def _no_state(tmp_path, state):
    torch.save(Payload(str(tmp_path / "executed")), tmp_path / "in.pt")
    return tmp_path / "in.pt"


def _non_tensor_entry(tmp_path, state):
    torch.save({**state, "epoch": 3}, tmp_path / "in.pt")
    return tmp_path / "in.pt"


def _wrong_architecture(tmp_path, state):
    torch.save({k: v for k, v in state.items() if k != "visual.proj"}, tmp_path / "in.pt")
    return tmp_path / "in.pt"


def _truncated(tmp_path, state):
    torch.save(state, tmp_path / "in.pt")
    (tmp_path / "in.pt").write_bytes((tmp_path / "in.pt").read_bytes()[:2000])
    return tmp_path / "in.pt"


def _garbage(tmp_path, state):
    (tmp_path / "in.pt").write_bytes(b"\x80\x02garbage")
    return tmp_path / "in.pt"


@pytest.mark.parametrize("make", [_payload, _custom_class])
def test_objects_beside_the_tensors_are_never_run(state, config_file, tmp_path, make):
    """weights_only refuses them; the inert reader reads them as data and runs nothing."""
    source = make(tmp_path, state)
    output = tmp_path / "out.safetensors"
    result = invoke("convert", source, "-o", output, "--model", config_file)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "executed").exists()
    assert load_file(str(output)).keys() == state.keys()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_non_tensor_entry, "entry 'epoch' is of type int, not a tensor"),
        (_wrong_architecture, "has no key visual.proj"),
        (_truncated, "in.pt is not a readable pickle, torch.save file or TorchScript archive"),
        (_garbage, "in.pt is not a readable pickle, torch.save file or TorchScript archive"),
        (_no_state, "holds an object of test_convert.ran_the_payload, not a state_dict"),
    ],
)
def test_refused_inputs_exit_2_and_write_nothing(state, config_file, tmp_path, make, expected):
    source = make(tmp_path, state)
    output = tmp_path / "out.safetensors"
    result = invoke("convert", source, "-o", output, "--model", config_file)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not output.exists() and not (tmp_path / "executed").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_refused_paths_exit_2(state, config_file, tmp_path):
    source = tmp_path / "ft.pt"
    torch.save(state, source)
    taken = tmp_path / "taken.safetensors"
    taken.write_bytes(b"keep")
    cases = [
        (tmp_path / "." / "ft.pt", "is also an input, the input checkpoint"),
        (tmp_path / "ft.bin", "give the output a .safetensors name"),
        (tmp_path / "no" / "ft.safetensors", "does not exist"),
        (taken, "exists; pass --force"),
    ]
    for output, expected in cases:
        result = invoke("convert", source, "-o", output, "--model", config_file)
        assert result.exit_code == 2 and expected in result.stderr, (output, result.output)
    assert taken.read_bytes() == b"keep"
    missing = invoke("convert", tmp_path / "none.pt", "-o", tmp_path / "x.safetensors")
    assert missing.exit_code == 2 and "none.pt does not exist" in missing.stderr
    no_model = invoke("convert", source, "-o", tmp_path / "x.safetensors")
    assert no_model.exit_code == 2 and "cannot tell the architecture" in no_model.stderr
    forced = invoke("convert", source, "-o", taken, "--model", config_file, "--force")
    assert forced.exit_code == 0 and load_file(str(taken)).keys() == state.keys()


def test_convert_from_python_checks_every_output_first_then_converts_each(
    state, config_file, tmp_path
):
    """The library's convert(): the command's checks and its results, without the CLI."""
    from clipsharp.analyses.convert import convert
    from clipsharp.errors import ClipsharpError
    from clipsharp.options import InputOptions

    sources = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for source in sources:
        torch.save(state, source)
    folder = tmp_path / "out"
    folder.mkdir()
    inputs = InputOptions(model=str(config_file))
    with pytest.raises(ClipsharpError, match="the --model config"):  # -o is an input
        convert(sources[:1], config_file, inputs=inputs)
    done = dict(convert(sources, folder, inputs=inputs))
    assert sorted(p.name for p in folder.iterdir()) == ["a.safetensors", "b.safetensors"]
    line = done[sources[0]].describe()
    assert (
        line.startswith("converted a.pt (open_clip state_dict) -> ")
        and f"{len(state)} tensors" in line
    )

"""Checkpoints of the WiSE-FT family: whole-module pickles, TorchScript archives, model soups.

Each layout is built here with stand-in classes under the module paths and names the
family's code uses (``src.models.modeling.ImageClassifier``, ``clip.model.VisualTransformer``,
``open_clip.model.VisualTransformer``, ...), pickled, and the stand-ins removed before
clipsharp reads the file, so nothing importable helps. The converted pair is then
interpolated and checked against a plain loop: weights lerped key by key as WiSE-FT's
``wise_ft.py`` does, logits = normalised image features @ W.T + b.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIG, fine_tune_like, invoke, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clipsharp.core import families
from clipsharp.core.pickles import read_pickle, recover_state_dict

CLASSES, EMBED = 4, TINY_CONFIG["embed_dim"]


class Payload:
    """Unpickled by a normal unpickler, it runs ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@contextmanager
def stand_ins(classes: dict[str, dict[str, type]]) -> Iterator[dict[str, type]]:
    """Classes ``{module: {name: base}}`` importable under those paths while pickling, then
    removed from ``sys.modules`` (and from open_clip.model, for its old names)."""
    import open_clip.model

    made, added = {}, []
    for module, names in classes.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        for name, base in names.items():
            cls = type(name, (base,), {"__module__": module, "__qualname__": name})
            setattr(sys.modules[module], name, cls)
            made[f"{module}.{name}"] = cls
    try:
        yield made
    finally:
        for name in added:
            del sys.modules[name]
        for qualified in made:
            module, _, name = qualified.rpartition(".")
            if module == "open_clip.model":
                delattr(open_clip.model, name)


def openai_classes(module: str) -> dict[str, type]:
    """The class names of OpenAI's clip/model.py, on open_clip's classes of the same job."""
    from open_clip.model import CLIP
    from open_clip.transformer import (
        LayerNorm,
        ResidualAttentionBlock,
        Transformer,
        VisionTransformer,
    )

    named = {"CLIP": CLIP, "VisualTransformer": VisionTransformer, "Transformer": Transformer,
             "ResidualAttentionBlock": ResidualAttentionBlock, "LayerNorm": LayerNorm}  # fmt: skip
    return {name: base for name, base in named.items() if not module.startswith("open_clip")}


def reclass(model: torch.nn.Module, made: dict[str, type], module: str) -> torch.nn.Module:
    """A copy of the open_clip model whose modules are of the stand-in classes."""
    model = copy.deepcopy(model)
    for sub in model.modules():
        for qualified, cls in made.items():
            if qualified.startswith(module + ".") and type(sub) in cls.__bases__:
                sub.__class__ = cls
    return model


def classification_head(cls: type, weight: torch.Tensor, bias: torch.Tensor, normalize=True):
    head = cls(weight.shape[1], weight.shape[0])
    head.weight, head.bias = torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())
    head.normalize = normalize
    return head


@pytest.fixture(scope="module")
def models():
    """The zero-shot and fine-tuned tiny CLIPs and their heads (C x D)."""
    zero_shot = tiny_model(0)
    fine_tuned = tiny_model(0)
    fine_tuned.load_state_dict(fine_tune_like(zero_shot.state_dict(), seed=1))
    gen = torch.Generator().manual_seed(5)
    head = torch.randn(CLASSES, EMBED, generator=gen) * 10, torch.randn(CLASSES, generator=gen)
    tuned = head[0] + torch.randn(CLASSES, EMBED, generator=gen), head[1] + 0.5
    return {"zs": (zero_shot, head), "ft": (fine_tuned, tuned)}


def wise_ft(root: Path, models, keep_lang: bool) -> dict:
    """WiSE-FT: pickle.dump of a whole ImageClassifier (classes of src.models.modeling and
    its vendored clip.model), a function of clip.clip and a payload among its attributes."""
    classes = {"src.models.modeling": {"ImageClassifier": torch.nn.Module,
               "ImageEncoder": torch.nn.Module, "ClassificationHead": torch.nn.Linear},
               "clip.model": openai_classes("clip.model"), "clip.clip": {}}  # fmt: skip
    files, states = {}, {}
    with stand_ins(classes) as made:
        to_rgb = types.FunctionType((lambda image: image).__code__, {}, "_convert_to_rgb")
        to_rgb.__module__, to_rgb.__qualname__ = "clip.clip", "_convert_to_rgb"
        sys.modules["clip.clip"]._convert_to_rgb = to_rgb
        for end, (model, (weight, bias)) in models.items():
            encoder = made["src.models.modeling.ImageEncoder"]()
            encoder.model = reclass(model, made, "clip.model")
            if not keep_lang:
                del encoder.model.transformer
            encoder.val_preprocess, encoder.cache_dir = to_rgb, None
            encoder.hook = Payload(root / "executed")
            head = classification_head(made["src.models.modeling.ClassificationHead"], weight, bias)
            classifier = made["src.models.modeling.ImageClassifier"]()
            classifier.image_encoder, classifier.classification_head = encoder, head
            classifier.process_images = False
            states[end] = classifier.state_dict()
            files[end] = root / f"{end}.pt"
            with open(files[end], "wb") as f:
                pickle.dump(classifier, f)
    return {
        "files": files,
        "states": states,
        "model": "image_encoder.model.",
        "head": "classification_head.",
        "layout": families.WISE_FT.name,
        "args": [],
    }


def task_vectors(root: Path, models, keep_lang: bool) -> dict:
    """task vectors: torch.save of a whole ImageEncoder (open_clip.model.VisualTransformer,
    a name open_clip no longer has); the head a whole ClassificationHead in its own file."""
    classes = {"src.modeling": {"ImageEncoder": torch.nn.Module,
               "ClassificationHead": torch.nn.Linear},
               "open_clip.model": {"VisualTransformer": _vision_transformer()}}  # fmt: skip
    files, states = {}, {}
    with stand_ins(classes) as made:
        weight, bias = models["zs"][1]
        head = classification_head(made["src.modeling.ClassificationHead"], weight, bias)
        torch.save(head, root / "head_DTD.pt")
        for end, (model, _) in models.items():
            encoder = made["src.modeling.ImageEncoder"]()
            encoder.model = reclass(model, made, "open_clip.model")
            if not keep_lang:
                del encoder.model.transformer
            states[end] = {**encoder.state_dict(), "classification_head.weight": weight,
                           "classification_head.bias": bias}  # fmt: skip
            files[end] = root / f"{end}.pt"
            torch.save(encoder, files[end])
    return {
        "files": files,
        "states": states,
        "model": "model.",
        "head": "classification_head.",
        "layout": families.TASK_VECTORS.name,
        "args": ["--head", root / "head_DTD.pt"],
    }


def _vision_transformer() -> type:
    from open_clip.transformer import VisionTransformer

    return VisionTransformer


def model_soups(root: Path, models, keep_lang: bool) -> dict:
    """model soups: torch.save of ModelWrapper.state_dict(): model.* and classification_head.*."""
    files, states = {}, {}
    for end, (model, (weight, bias)) in models.items():
        wrapper = torch.nn.Module()
        wrapper.model = copy.deepcopy(model)
        if not keep_lang:
            del wrapper.model.transformer
        wrapper.classification_head = classification_head(torch.nn.Linear, weight, bias)
        states[end] = wrapper.state_dict()
        files[end] = root / f"model_{end}.pt"
        torch.save(states[end], files[end])
    return {
        "files": files,
        "states": states,
        "model": "model.",
        "head": "classification_head.",
        "layout": families.MODEL_SOUPS.name,
        "args": [],
    }


def openai_archive(root: Path, models, keep_lang: bool = True) -> dict:
    """OpenAI's release: a traced TorchScript archive of the whole CLIP (text tower too),
    with the numbers it was built with as buffers; a payload run by data.pkl's first op.
    The head (a file of tensors) is attached with --head."""
    files, states = {}, {}
    weight, bias = models["zs"][1]
    save_file({"weight": weight, "bias": bias}, str(root / "head.safetensors"))
    with stand_ins({"clip.model": openai_classes("clip.model")}) as made:
        for end, (model, _) in models.items():
            clip = reclass(model, made, "clip.model")
            for key, value in (("input_resolution", 32), ("context_length", 16),
                               ("vocab_size", 49408)):  # fmt: skip
                clip.__dict__.pop(key, None)  # open_clip keeps them as plain attributes
                clip.register_buffer(key, torch.tensor(value))
            states[end] = {**model.state_dict(), "classification_head.weight": weight,
                           "classification_head.bias": bias}  # fmt: skip
            text = torch.zeros(1, 16, dtype=torch.long)
            traced = torch.jit.trace(clip, (torch.zeros(1, 3, 32, 32), text), check_trace=False)
            files[end] = root / f"{end}.pt"
            torch.jit.save(traced, str(files[end]))
            with_payload(files[end], root / "executed")
    return {
        "files": files,
        "states": states,
        "model": "",
        "head": "classification_head.",
        "layout": families.OPENAI.name,
        "args": ["--head", root / "head.safetensors"],
    }


def with_payload(archive: Path, marker: Path) -> None:
    """Rewrite the archive's data.pkl to call os.system before anything else."""
    command = f"touch {marker}".encode()
    payload = b"cposix\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R0"
    records = {}
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            data = z.read(name)
            if name.endswith("/data.pkl"):
                data = data[:2] + payload + data[2:]  # after PROTO 2
            records[name] = data
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, data in records.items():
            z.writestr(name, data)


LAYOUTS = {"wise-ft": wise_ft, "task-vectors": task_vectors, "model-soups": model_soups}


def reference(states, layout, alpha: float, dataset) -> tuple[float, float]:
    """Accuracy and mean loss of theta(alpha), lerped key by key, by a plain loop."""
    import datasets
    import open_clip
    from open_clip.model import CLIP

    zs, ft = states["zs"], states["ft"]
    theta = {k: (1 - alpha) * zs[k] + alpha * ft[k] if zs[k].is_floating_point() else zs[k]
             for k in zs}  # fmt: skip
    model = CLIP(**json.loads(json.dumps(TINY_CONFIG))).eval()
    visual = {k.removeprefix(layout["model"]): v for k, v in theta.items()
              if k.startswith(layout["model"] + "visual.")}  # fmt: skip
    model.load_state_dict(visual, strict=False)
    weight, bias = theta[layout["head"] + "weight"], theta[layout["head"] + "bias"]
    transform = open_clip.image_transform(32, is_train=False)
    correct, losses = 0, []
    with torch.no_grad():
        for row in datasets.load_from_disk(str(dataset)):
            image = transform(row["image"].convert("RGB")).unsqueeze(0)
            logits = F.normalize(model.encode_image(image), dim=-1) @ weight.T + bias
            correct += int(logits.argmax(-1).item() == row["label"])
            losses.append(F.cross_entropy(logits, torch.tensor([row["label"]])).item())
    return correct / len(losses), sum(losses) / len(losses)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def convert_and_interpolate(layout: dict, pair, config_file, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    files = layout["files"]
    result = invoke("convert", files["zs"], files["ft"], "-o", out, "--model", config_file,
                    *layout["args"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.count(f"({layout['layout']}") == 2, result.stderr
    assert not (tmp_path / "executed").exists()
    converted = [out / f"{files[end].stem}.safetensors" for end in ("zs", "ft")]
    with safe_open(str(converted[1]), framework="pt") as handle:
        assert handle.metadata()["clipsharp.layout"] == layout["layout"]
    inspected = invoke("inspect", converted[1], "-o", "-")
    assert json.loads(inspected.stdout)["summary"]["source_layout"] == layout["layout"]
    args = ["--ood", pair.shifted, "--alphas", "0,0.5,1", "--device", "cpu", "-o", "-"]
    run = invoke("interpolate", *converted, *args)
    assert run.exit_code == 0, run.output
    path = {p["alpha"]: p["metrics"]["shifted"] for p in json.loads(run.stdout)["results"]["path"]}
    for alpha in (0.0, 0.5, 1.0):
        accuracy, loss = reference(layout["states"], layout, alpha, pair.shifted)
        assert path[alpha]["accuracy"] == pytest.approx(accuracy, abs=1e-12), alpha
        assert path[alpha]["loss"] == pytest.approx(loss, rel=1e-4), alpha


@pytest.mark.parametrize("name", LAYOUTS)
def test_image_tower_only_layouts_convert_and_interpolate(name, models, pair, config_file,
                                                          tmp_path):  # fmt: skip
    layout = LAYOUTS[name](tmp_path, models, keep_lang=False)
    convert_and_interpolate(layout, pair, config_file, tmp_path)


@pytest.mark.parametrize("name", [*LAYOUTS, "openai"])
def test_layouts_with_the_text_tower_convert_and_interpolate(name, models, pair, config_file,
                                                             tmp_path):  # fmt: skip
    build = openai_archive if name == "openai" else LAYOUTS[name]
    layout = build(tmp_path, models, keep_lang=True)
    convert_and_interpolate(layout, pair, config_file, tmp_path)


def test_the_stand_ins_are_gone_and_nothing_ran(models, tmp_path):
    """Plain unpickling fails (the users' errors); the inert reader runs nothing."""
    layout = wise_ft(tmp_path, models, keep_lang=False)
    with (
        pytest.raises(ModuleNotFoundError, match="No module named 'src'"),
        open(layout["files"]["zs"], "rb") as f,
    ):
        pickle.load(f)
    pickled = read_pickle(layout["files"]["zs"])
    recovered = recover_state_dict(pickled.root, pickled)
    assert not (tmp_path / "executed").exists()
    assert recovered.tensors.keys() == layout["states"]["zs"].keys()
    for key, tensor in layout["states"]["zs"].items():
        assert torch.equal(recovered.tensors[key], tensor), key
    assert recovered.attributes["classification_head.normalize"] is True
    assert recovered.classes["image_encoder.model.visual"] == "clip.model.VisualTransformer"
    assert pickled.container == "pickle"
    tv = task_vectors(tmp_path, models, keep_lang=False)
    with pytest.raises(ModuleNotFoundError, match="No module named 'src'"):
        torch.load(tv["files"]["zs"], weights_only=False)  # nor open_clip.VisualTransformer
    assert not hasattr(__import__("open_clip").model, "VisualTransformer")


def test_a_payload_in_a_state_dict_or_an_archive_runs_nothing(models, config_file, tmp_path):
    layout = model_soups(tmp_path, models, keep_lang=True)
    poisoned = tmp_path / "poisoned.pt"
    torch.save({**layout["states"]["zs"], "hook": Payload(tmp_path / "executed")}, poisoned)
    result = invoke("convert", poisoned, "-o", tmp_path / "p.safetensors", "--model", config_file)
    assert result.exit_code == 2 and "entry 'hook' is of type posix.system" in result.stderr
    archive = openai_archive(tmp_path, models)
    with pytest.raises(Exception):  # noqa: B017  a normal reader would run it: here it fails
        torch.jit.load(str(archive["files"]["zs"]))
    assert not (tmp_path / "executed").exists()
    pickled = read_pickle(archive["files"]["zs"])
    assert pickled.container == "TorchScript archive"
    assert not (tmp_path / "executed").exists()


def test_a_head_that_does_not_normalize_is_refused(models, config_file, tmp_path):
    classes = {"src.modeling": {"ClassificationHead": torch.nn.Linear}}
    with stand_ins(classes) as made:
        weight, bias = models["zs"][1]
        head = classification_head(made["src.modeling.ClassificationHead"], weight, bias, False)
        torch.save(head, tmp_path / "head.pt")
    source = tmp_path / "zs.pt"
    torch.save(models["zs"][0].state_dict(), source)
    result = invoke("convert", source, "-o", tmp_path / "zs.safetensors", "--model", config_file,
                    "--head", tmp_path / "head.pt")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "has normalize=False" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "zs.safetensors").exists()


def test_several_inputs_one_line_each_a_failure_sets_the_exit_code(pair, config_file, tmp_path):
    state = load_file(str(pair.fine_tuned))
    for i in range(3):
        torch.save(state, tmp_path / f"model_{i}.pt")
    (tmp_path / "model_1.pt").write_bytes(b"\x80\x02garbage")
    out = tmp_path / "soups"
    out.mkdir()
    files = [tmp_path / f"model_{i}.pt" for i in range(3)]
    result = invoke("convert", *files, "-o", out, "--model", config_file)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and "model_1.pt is not a readable pickle" in lines[1]
    assert lines[0].startswith("converted model_0.pt") and lines[2].startswith("converted model_2")
    assert sorted(p.name for p in out.iterdir()) == ["model_0.safetensors", "model_2.safetensors"]
    assert load_file(str(out / "model_2.safetensors")).keys() == state.keys()
    same = invoke("convert", files[0], tmp_path / "x" / "model_0.pt", "-o", out)
    assert same.exit_code == 2 and "would both be written to" in same.stderr
    not_folder = invoke("convert", *files, "-o", tmp_path / "none")
    assert not_folder.exit_code == 2 and "create it first" in not_folder.stderr


def test_head_file_forms(models, tmp_path):
    from clipsharp.analyses.convert import read_head

    weight, bias = models["zs"][1]
    torch.save(weight, tmp_path / "w.pt")
    torch.save({"classification_head.weight": weight, "classification_head.bias": bias},
               tmp_path / "sd.pt")  # fmt: skip
    assert torch.equal(read_head(tmp_path / "w.pt")["head.bias"], torch.zeros(CLASSES))
    found = read_head(tmp_path / "sd.pt")
    assert torch.equal(found["head.weight"], weight) and torch.equal(found["head.bias"], bias)


def test_an_open_clip_training_checkpoint_is_named(pair, config_file, tmp_path):
    state = load_file(str(pair.fine_tuned))
    saved = {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(saved, tmp_path / "epoch_3.pt")
    result = invoke("convert", tmp_path / "epoch_3.pt", "-o", tmp_path / "e.safetensors",
                    "--model", config_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(open_clip training checkpoint, from 'state_dict', 'module.' stripped)" in (
        result.stderr
    )
    assert families.recognise(state.keys()) is families.OPEN_CLIP


class Block(torch.nn.Module):
    """A module with a parameter, a buffer, a non-persistent buffer, a plain tensor
    attribute (none of them in its state_dict but the first two) and a payload."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("mask", torch.arange(2.0))
        self.register_buffer("scratch", torch.zeros(1), persistent=False)
        self.attn_mask = torch.eye(2)
        self.hook = Payload(marker)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.mask + self.attn_mask.sum()


def _saved(block: Block, path: Path, how: str) -> None:
    if how == "legacy":
        torch.save(block, path, _use_new_zipfile_serialization=False)
    elif how == "zip":
        torch.save(block, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(block, f, protocol=int(how.removeprefix("protocol-")))


@pytest.mark.parametrize("how", ["zip", "legacy", "protocol-0", "protocol-2", "protocol-4"])
def test_a_module_pickle_gives_its_state_dict_and_runs_nothing(how, tmp_path):
    block = Block(tmp_path / "executed")
    _saved(block, tmp_path / "block.pt", how)
    pickled = read_pickle(tmp_path / "block.pt")
    recovered = recover_state_dict(pickled.root, pickled)
    assert not (tmp_path / "executed").exists()
    expected = block.state_dict()
    assert list(recovered.tensors) == list(expected)  # scratch and attn_mask left out
    assert all(torch.equal(recovered.tensors[k], v) for k, v in expected.items())
    assert recovered.classes == {"": "test_family.Block", "lin": "torch.nn.modules.linear.Linear"}
    assert recovered.attributes["lin.in_features"] == 3


def test_a_torchscript_archive_gives_its_declared_tensors(tmp_path):
    """Scripted, the plain tensor attribute is in data.pkl but, as its code/ declares, in
    neither __parameters__ nor __buffers__; TorchScript keeps the non-persistent buffer."""
    block = Block(tmp_path / "executed")
    del block.hook
    torch.jit.save(torch.jit.script(block), str(tmp_path / "block.pt"))
    pickled = read_pickle(tmp_path / "block.pt")
    recovered = recover_state_dict(pickled.root, pickled)
    expected = torch.jit.load(str(tmp_path / "block.pt")).state_dict()
    assert sorted(recovered.tensors) == sorted(expected) == ["lin.bias", "lin.weight", "mask",
                                                              "scratch"]  # fmt: skip
    assert all(torch.equal(recovered.tensors[k], v) for k, v in expected.items())


def test_what_the_inert_reader_refuses(tmp_path):
    from clipsharp.errors import CheckpointError

    evil = tmp_path / "evil.pkl"  # a "tensor" rebuilt from no storage
    evil.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)))\x89tR.")
    with pytest.raises(CheckpointError, match="a tensor rebuilt from no storage"):
        read_pickle(evil)
    eval_call = tmp_path / "eval.pkl"  # builtins.eval stays a stand-in: called, it records
    code = "open('x', 'w').write('ran')"
    text = b"X" + len(code).to_bytes(4, "little") + code.encode()
    eval_call.write_bytes(b"\x80\x02cbuiltins\neval\n" + text + b"\x85R.")
    with pytest.raises(NameError):  # what a normal unpickler would run (here: no `x`)
        pickle.loads(eval_call.read_bytes().replace(b"open", b"oops"))
    stand_in = read_pickle(eval_call).root
    assert stand_in.global_name == "builtins.eval" and stand_in.args == (code,)
    assert not (tmp_path / "x").exists() and not Path("x").exists()

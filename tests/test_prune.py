"""Pruning: exact fractions, torch's l1_unstructured masks, task vectors, safe outputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from conftest import invoke, save_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file

from clipsharp.analyses.prune import prune_mask
from clipsharp.core.layers import layer_groups


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_mask_equals_torch_l1_unstructured(sparsity):
    weight = torch.randn(37, 23, generator=torch.Generator().manual_seed(0))  # no ties
    module = torch.nn.Linear(23, 37)
    module.weight.data.copy_(weight)
    torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    expected = module.weight_mask == 0
    assert torch.equal(prune_mask(weight, sparsity), expected)


def test_weights_pruned_per_tensor_and_nothing_else_touched(pair, tmp_path):
    output = tmp_path / "pruned.safetensors"
    result = invoke(
        "prune",
        pair.fine_tuned,
        "--layers",
        "visual.block.1",
        "--sparsity",
        "0.3",
        "-o",
        output,
        "--report",
        "-",
    )
    assert result.exit_code == 0, result.output
    before, after = load_file(str(pair.fine_tuned)), load_file(str(output))
    chosen = set(layer_groups(before)["visual.block.1"])
    doc = json.loads(result.stdout)
    pruned_keys = {row["key"] for row in doc["results"]["tensors"]}
    assert pruned_keys == {k for k in chosen if before[k].ndim >= 2}  # matrices only
    for key, tensor in after.items():
        if key in pruned_keys:
            zeros = int((tensor == 0).sum()) - int((before[key] == 0).sum())
            assert abs(zeros - 0.3 * tensor.numel()) <= 1, key
            kept = tensor != 0
            assert torch.equal(tensor[kept], before[key][kept])
            smallest_kept = before[key][kept].abs().min()
            assert before[key][~kept].abs().max() <= smallest_kept
        else:
            assert torch.equal(tensor, before[key]), key


def test_include_vectors_prunes_biases_too(pair, tmp_path):
    output = tmp_path / "pruned.safetensors"
    result = invoke(
        "prune",
        pair.fine_tuned,
        "--layers",
        "visual.block.0",
        "--include-vectors",
        "-o",
        output,
        "--report",
        "-",
    )
    assert result.exit_code == 0, result.output
    keys = {row["key"] for row in json.loads(result.stdout)["results"]["tensors"]}
    assert "visual.transformer.resblocks.0.ln_1.bias" in keys


def test_task_vector_pruning_returns_entries_to_zero_shot(pair, tmp_path):
    output = tmp_path / "pruned.safetensors"
    result = invoke(
        "prune",
        pair.fine_tuned,
        "--layers",
        "visual.head,visual.block.0",
        "--target",
        "task-vector",
        "--zero-shot",
        pair.zero_shot,
        "--sparsity",
        "0.4",
        "-o",
        output,
    )
    assert result.exit_code == 0, result.output
    zs, ft, pruned = (load_file(str(p)) for p in (pair.zero_shot, pair.fine_tuned, output))
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    back = pruned[key] == zs[key]
    assert abs(int(back.sum()) - 0.4 * back.numel()) <= 1
    assert torch.equal(pruned[key][~back], ft[key][~back])
    tau = (ft[key] - zs[key]).abs()
    assert tau[back].max() <= tau[~back].min()


def test_metadata_carries_architecture_and_provenance(pair, tmp_path):
    import hashlib

    output = tmp_path / "pruned.safetensors"
    assert (
        invoke("prune", pair.fine_tuned, "--layers", "visual.block.0", "-o", output).exit_code == 0
    )
    with safe_open(str(output), "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["clipsharp.model_config"])
    assert config.get("model_cfg", config)["embed_dim"] == 32
    assert meta["clipsharp.operation"] == "prune"
    assert (
        meta["clipsharp.source_sha256"] == hashlib.sha256(pair.fine_tuned.read_bytes()).hexdigest()
    )
    params = json.loads(meta["clipsharp.parameters"])
    assert params["layers"] == ["visual.block.0"] and params["sparsity"] == 0.5
    # every command loads it with no --model: the architecture comes from its metadata
    result = invoke("interpolate", pair.zero_shot, output, "--ood", pair.shifted,
                    "--alphas", "0,1", "--device", "cpu", "-o", "-")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["inputs"]["architecture"]["source"] == "metadata"
    assert (
        doc["inputs"]["checkpoints"]["fine_tuned"]["sha256"]
        == hashlib.sha256(output.read_bytes()).hexdigest()
    )


def test_output_over_an_input_is_refused(pair, tmp_path):
    copy = save_checkpoint(tmp_path / "ft.safetensors", load_file(str(pair.fine_tuned)))
    before = copy.read_bytes()
    result = invoke("prune", copy, "--layers", "visual.block.0", "-o", copy)
    assert result.exit_code == 2 and "is also an input" in result.stderr
    assert copy.read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --layers and --from"),
        (["--layers", "visual.block.9"], "valid names"),
        (["--layers", "visual.block.0", "--target", "task-vector"], "needs the zero-shot"),
        (["--layers", "visual.block.0", "--sparsity", "1.5"], "outside [0, 1]"),
    ],
)
def test_bad_prune_requests(pair, tmp_path, extra, message):
    output = tmp_path / "pruned.safetensors"
    result = invoke("prune", pair.fine_tuned, "-o", output, *extra)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not output.exists()


def test_datasets_without_zero_shot_prune_with_a_warning(pair, tmp_path):
    output = tmp_path / "pruned.safetensors"
    result = invoke("prune", pair.fine_tuned, "--layers", "visual.block.0", "--ood", pair.shifted,
                   "-o", output, "--report", "-")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not measured" in result.stderr and output.exists()
    assert "before" not in json.loads(result.stdout)["summary"]


def test_from_a_stragglers_report_and_before_after(pair, tmp_path):
    from clipsharp.reports.report import SCHEMA

    report = tmp_path / "stragglers.json"
    report.write_text(
        json.dumps(
            {
                "schema": SCHEMA,
                "command": "stragglers",
                "summary": {"stragglers": ["visual.block.1"]},
            }
        )
    )
    output = tmp_path / "pruned.safetensors"
    result = invoke(
        "prune",
        pair.fine_tuned,
        "--from",
        report,
        "--zero-shot",
        pair.zero_shot,
        "--ood",
        pair.shifted,
        "--alphas",
        "0,1",
        "--device",
        "cpu",
        "-o",
        output,
        "--report",
        "-",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["layers"] == ["visual.block.1"]
    assert set(doc["summary"]["before"]) == set(doc["summary"]["after"]) == {"shifted"}
    before_ft = doc["results"]["before"][-1]["metrics"]["shifted"]
    after_ft = doc["results"]["after"][-1]["metrics"]["shifted"]
    assert doc["results"]["before"][0] == doc["results"]["after"][0]  # same zero-shot end
    assert before_ft != after_ft
    report.write_text(json.dumps({"schema": SCHEMA, "command": "stragglers",
                                  "summary": {"stragglers": []}}))  # fmt: skip
    result = invoke("prune", pair.fine_tuned, "--from", report, "-o", output)
    assert result.exit_code == 0 and "lists no straggler layers" in result.stderr
    assert load_file(str(output)).keys() == load_file(str(pair.fine_tuned)).keys()
    assert all(
        torch.equal(v, load_file(str(pair.fine_tuned))[k])
        for k, v in load_file(str(output)).items()
    )
    wrong = tmp_path / "path.json"
    wrong.write_text(json.dumps({"schema": SCHEMA, "command": "interpolate", "summary": {}}))
    result = invoke("prune", pair.fine_tuned, "--from", wrong, "-o", output)
    assert result.exit_code == 2 and "give a stragglers report" in result.stderr


def test_transformers_input_is_pruned_into_a_folder_from_pretrained_loads(hf_pair, tmp_path):
    transformers = pytest.importorskip("transformers")
    output, report = tmp_path / "pruned", tmp_path / "prune.json"
    args = ["prune", hf_pair.fine_tuned, "--zero-shot", hf_pair.zero_shot, "--layers",
            "visual.block.1", "--target", "task-vector", "--sparsity", "0.5"]  # fmt: skip
    result = invoke(*args, "-o", output, "--report", report)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prune.json", "pruned"]  # no staging
    assert sorted(p.name for p in output.iterdir()) == ["config.json", "model.safetensors"]
    assert (output / "config.json").read_text() == (hf_pair.fine_tuned / "config.json").read_text()
    assert json.loads(report.read_text())["config"]["format"] == "transformers"

    def state(folder) -> dict:
        return transformers.CLIPModel.from_pretrained(folder).state_dict()

    pruned, ft, zs = state(output), state(hf_pair.fine_tuned), state(hf_pair.zero_shot)
    layer = "vision_model.encoder.layers.1."
    returned = total = 0
    for key, value in pruned.items():
        if not key.startswith(layer) or value.ndim < 2:  # everything else as fine-tuned
            assert torch.equal(value, ft[key]), key
            continue
        back = value == zs[key]
        assert torch.equal(value[~back], ft[key][~back]), key  # the rest as fine-tuned
        returned, total = returned + int(back.sum()), total + back.numel()
        if key.endswith("mlp.fc1.weight"):  # the smallest task-vector entries went back
            tau = (ft[key] - zs[key]).abs()
            assert tau[back].max() <= tau[~back].min()
    assert total > 0 and returned == total // 2  # every matrix has an even number of entries
    with safe_open(str(output / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["clipsharp.operation"] == "prune"
    assert json.loads(meta["clipsharp.parameters"])["layers"] == ["visual.block.1"]

    again = invoke(*args, "-o", output)  # over its own earlier output: allowed, same tensors
    assert again.exit_code == 0, again.output
    assert load_file(str(output / "model.safetensors")).keys() == set(
        load_file(str(hf_pair.fine_tuned / "model.safetensors"))
    )
    rewritten = state(output)
    assert all(torch.equal(value, rewritten[key]) for key, value in pruned.items())

    as_file = tmp_path / "pruned.safetensors"
    refused = invoke(*args, "-o", as_file)
    assert refused.exit_code == 2 and "written as a folder" in refused.stderr
    assert not as_file.exists() and not (tmp_path / ".pruned.safetensors.pending").exists()


# ---- the library's prune with a report: the checkpoint and its report, both or neither -----


def library_prune(pair, tmp_path, **how):
    from clipsharp.analyses.prune import prune
    from clipsharp.core.workspace import Inputs
    from clipsharp.options import PruneOptions

    inputs = Inputs({"fine_tuned": pair.fine_tuned}, ())
    options = PruneOptions(layers="visual.block.0", sparsity=0.3)
    return prune(inputs, tmp_path / "p.safetensors", options, **how)


def test_library_prune_writes_the_checkpoint_and_its_report_together(pair, tmp_path):
    report = library_prune(pair, tmp_path, report=tmp_path / "p.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.safetensors"]  # no staging
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads(report.to_json())
    assert report.config["output"] == str(tmp_path / "p.safetensors")  # not the staged name
    pruned, before = load_file(str(tmp_path / "p.safetensors")), load_file(str(pair.fine_tuned))
    for row in report.results["tensors"]:
        zeros = int((pruned[row["key"]] == 0).sum()) - int((before[row["key"]] == 0).sum())
        assert zeros == row["pruned"] == round(0.3 * row["numel"])


def test_library_prune_leaves_neither_file_when_the_report_cannot_be_written(
    pair, tmp_path, monkeypatch
):
    from clipsharp.reports.report import Report

    def full(self, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(Report, "write", full)
    with pytest.raises(OSError, match="No space left"):
        library_prune(pair, tmp_path, report=tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []  # the staged checkpoint removed too


def test_library_prune_removes_its_report_when_the_checkpoint_cannot_be_moved(
    pair, tmp_path, monkeypatch
):
    import clipsharp.analyses.prune as pruning
    from clipsharp.errors import ClipsharpError

    def refused(staged, output):
        raise ClipsharpError(f"cannot write -o {output}: Read-only file system")

    monkeypatch.setattr(pruning, "move", refused)
    with pytest.raises(ClipsharpError, match="Read-only"):
        library_prune(pair, tmp_path, report=tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []  # the report went with the checkpoint


def test_library_prune_refuses_an_output_that_is_an_input_before_any_work(pair, tmp_path):
    from clipsharp.errors import ConfigError

    heard = []
    with pytest.raises(ConfigError, match="is also an input, the fine-tuned checkpoint"):
        library_prune(pair, tmp_path, report=pair.fine_tuned, progress=heard.append)
    config = tmp_path / "clipsharp.toml"
    config.write_text("")
    with pytest.raises(ConfigError, match="is also an input, the config file"):
        library_prune(pair, tmp_path, report=config, reads=[("the config file", config)])
    assert heard == [] and sorted(p.name for p in tmp_path.iterdir()) == ["clipsharp.toml"]

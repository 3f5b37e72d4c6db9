"""``merge``: theta(alpha) written in the inputs' own format, alpha chosen on the ID set."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import invoke
from safetensors import safe_open
from safetensors.torch import load_file

from clipsharp.files import file_sha256


def metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def assert_formula(merged: dict, zero_shot: dict, fine_tuned: dict, alpha: float) -> None:
    """Every tensor is (1 - alpha) * zs + alpha * ft, computed here in float64."""
    assert merged.keys() == zero_shot.keys()
    for key, value in merged.items():
        expected = (1 - alpha) * zero_shot[key].double() + alpha * fine_tuned[key].double()
        assert value.dtype == zero_shot[key].dtype
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def path_report(pair, tmp_path_factory):
    """A real interpolate report of the open_clip pair, with an ID and an OOD set."""
    report = tmp_path_factory.mktemp("merge") / "path.json"
    args = ["interpolate", pair.zero_shot, pair.fine_tuned, "--id", pair.in_dist]
    result = invoke(*args, "--ood", pair.shifted, "--alphas", "0:1:0.25", "-o", report)
    assert result.exit_code == 0, result.output
    return report


def edited(report, tmp_path, change) -> object:
    """A copy of the report with ``change(doc)`` applied (checkpoint sha256s untouched)."""
    doc = json.loads(report.read_text())
    change(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_open_clip_merge_is_the_formula_and_keeps_the_architecture(pair, tmp_path):
    output = tmp_path / "wise-ft.safetensors"
    result = invoke("merge", pair.zero_shot, pair.fine_tuned, "--alpha", "0.3", "-o", output)
    assert result.exit_code == 0, result.output
    zero_shot, fine_tuned = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    assert_formula(load_file(str(output)), zero_shot, fine_tuned, 0.3)
    meta = metadata(output)
    written = json.loads(meta["clipsharp.model_config"])
    assert written == json.loads(metadata(pair.fine_tuned)["clipsharp.model_config"])
    assert meta["clipsharp.operation"] == "merge" and meta["clipsharp.alpha"] == "0.3"
    assert meta["clipsharp.zero_shot_sha256"] == file_sha256(pair.zero_shot)
    assert meta["clipsharp.source_sha256"] == file_sha256(pair.fine_tuned)
    assert json.loads(meta["clipsharp.parameters"])["alpha"] == 0.3
    assert "clipsharp.version" in meta
    inspected = invoke("inspect", output, "-o", "-")  # its architecture is found again
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.stdout)["inputs"]["architecture"]["source"] == "metadata"


def test_transformers_merge_loads_with_from_pretrained(hf_pair, tmp_path):
    transformers = pytest.importorskip("transformers")
    output = tmp_path / "merged"
    result = invoke("merge", hf_pair.zero_shot, hf_pair.fine_tuned, "--alpha", "0.4", "-o", output)
    assert result.exit_code == 0, result.output
    assert "transformers folder" in result.stderr
    merged = transformers.CLIPModel.from_pretrained(output).state_dict()
    zero_shot = transformers.CLIPModel.from_pretrained(hf_pair.zero_shot).state_dict()
    fine_tuned = transformers.CLIPModel.from_pretrained(hf_pair.fine_tuned).state_dict()
    assert_formula(merged, zero_shot, fine_tuned, 0.4)
    assert (output / "config.json").read_text() == (hf_pair.fine_tuned / "config.json").read_text()
    meta = metadata(output / "model.safetensors")
    assert meta["format"] == "pt" and meta["clipsharp.alpha"] == "0.4"
    assert meta["clipsharp.source_sha256"] == file_sha256(hf_pair.fine_tuned / "model.safetensors")
    # written again over its own earlier output: allowed, same result
    weights, stamped = load_file(str(output / "model.safetensors")), meta
    again = invoke("merge", hf_pair.zero_shot, hf_pair.fine_tuned, "--alpha", "0.4", "-o", output)
    assert again.exit_code == 0, again.output
    assert sorted(path.name for path in output.iterdir()) == ["config.json", "model.safetensors"]
    assert metadata(output / "model.safetensors") == stamped
    rewritten = load_file(str(output / "model.safetensors"))
    assert rewritten.keys() == weights.keys()
    assert all(torch.equal(rewritten[key], weights[key]) for key in weights)


def test_alpha_best_is_the_id_sets_best(pair, path_report, tmp_path):
    doc = json.loads(path_report.read_text())
    output = tmp_path / "best.safetensors"
    args = ["merge", pair.zero_shot, pair.fine_tuned, "--alpha", "best", "--from", path_report]
    result = invoke(*args, "-o", output)
    assert result.exit_code == 0, result.output
    assert float(metadata(output)["clipsharp.alpha"]) == doc["summary"]["in_dist"]["best_alpha"]

    def apart(doc):  # make the two sets' best alphas differ, so the choice shows
        doc["summary"]["in_dist"]["best_alpha"] = 0.25
        doc["summary"]["shifted"]["best_alpha"] = 0.75

    report = edited(path_report, tmp_path, apart)
    result = invoke(
        "merge", pair.zero_shot, pair.fine_tuned, "--alpha", "best", "--from", report, "-o", output
    )
    assert result.exit_code == 0, result.output
    meta = metadata(output)
    assert meta["clipsharp.alpha"] == "0.25"
    assert meta["clipsharp.alpha_selection"].startswith(
        "best alpha on the in-distribution set in_dist"
    )
    assert "test-set" not in result.stderr
    zero_shot, fine_tuned = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    assert_formula(load_file(str(output)), zero_shot, fine_tuned, 0.25)


def test_choosing_on_an_ood_set_needs_select_on_and_is_recorded(pair, path_report, tmp_path):
    def ood_only(doc):
        doc["inputs"]["datasets"] = [d for d in doc["inputs"]["datasets"] if d["role"] == "ood"]
        del doc["summary"]["in_dist"]
        doc["summary"]["shifted"]["best_alpha"] = 0.75

    report = edited(path_report, tmp_path, ood_only)
    output = tmp_path / "ood.safetensors"
    args = ["merge", pair.zero_shot, pair.fine_tuned, "--alpha", "best", "--from", report]
    result = invoke(*args, "-o", output)
    assert result.exit_code == 2 and "no in-distribution (--id) set" in result.stderr
    assert "--select-on NAME" in result.stderr and not output.exists()
    result = invoke(*args, "--select-on", "shifted", "-o", output)
    assert result.exit_code == 0, result.output
    assert "chosen on the OOD set shifted (test-set selection)" in " ".join(result.stderr.split())
    meta = metadata(output)
    assert meta["clipsharp.alpha"] == "0.75"
    assert "OOD set (test-set selection) shifted" in meta["clipsharp.alpha_selection"]
    assert json.loads(meta["clipsharp.parameters"])["role"] == "ood"


@pytest.mark.parametrize("alpha", [1.25, -0.5])
def test_extrapolate_goes_past_the_endpoints(pair, tmp_path, alpha):
    output = tmp_path / "beyond.safetensors"
    args = ["merge", pair.zero_shot, pair.fine_tuned, "--alpha", str(alpha), "--extrapolate"]
    result = invoke(*args, "-o", output)
    assert result.exit_code == 0, result.output
    zero_shot, fine_tuned = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    assert_formula(load_file(str(output)), zero_shot, fine_tuned, alpha)
    assert float(metadata(output)["clipsharp.alpha"]) == alpha


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--alpha", "1.5"], "--alpha 1.5 is outside [0, 1]"),
        (["--alpha", "nan", "--extrapolate"], "--alpha nan is not a finite number"),
        (["--alpha", "best"], "--alpha best needs --from REPORT"),
        (["--alpha", "0.5", "--select-on", "shifted"], "--select-on is for --alpha best"),
        (["--alpha", "best", "--from", "{report}", "--select-on", "nope"], "--select-on nope"),
    ],
)
def test_bad_merge_requests(pair, path_report, tmp_path, extra, expected):
    output = tmp_path / "m.safetensors"
    extra = [str(e).replace("{report}", str(path_report)) for e in extra]
    result = invoke("merge", pair.zero_shot, pair.fine_tuned, *extra, "-o", output)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


def test_report_of_another_pair_is_refused(pair, path_report, tmp_path):
    output = tmp_path / "m.safetensors"
    args = ["merge", pair.fine_tuned, pair.zero_shot, "--alpha", "best", "--from", path_report]
    result = invoke(*args, "-o", output)
    assert result.exit_code == 2
    assert "was made on another zero-shot checkpoint than" in result.stderr
    assert not output.exists()


def test_output_over_an_input_is_refused(pair, hf_pair, tmp_path):
    before = file_sha256(pair.fine_tuned)
    result = invoke(
        "merge", pair.zero_shot, pair.fine_tuned, "--alpha", "0.5", "-o", pair.fine_tuned
    )
    assert result.exit_code == 2 and "is also an input" in result.stderr
    assert file_sha256(pair.fine_tuned) == before
    inside = hf_pair.fine_tuned / "merged"
    result = invoke("merge", hf_pair.zero_shot, hf_pair.fine_tuned, "--alpha", "0.5", "-o", inside)
    assert result.exit_code == 2 and "lies inside an input" in result.stderr
    assert not inside.exists()
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = invoke("merge", hf_pair.zero_shot, hf_pair.fine_tuned, "--alpha", "0.5", "-o", other)
    assert result.exit_code == 2 and "holds notes.txt" in result.stderr


def test_best_alpha_past_an_endpoint_needs_extrapolate(pair, path_report, tmp_path):
    report = edited(
        path_report, tmp_path, lambda doc: doc["summary"]["in_dist"].update(best_alpha=1.2)
    )
    output = tmp_path / "m.safetensors"
    args = ["merge", pair.zero_shot, pair.fine_tuned, "--alpha", "best", "--from", report]
    refused = invoke(*args, "-o", output)
    assert refused.exit_code == 2 and "is 1.2, outside [0, 1]" in refused.stderr
    assert not output.exists()
    result = invoke(*args, "--extrapolate", "-o", output)
    assert result.exit_code == 0, result.output
    assert metadata(output)["clipsharp.alpha"] == "1.2"


def test_report_records_the_choice_and_show_renders_it(pair, path_report, tmp_path):
    output, report = tmp_path / "best.safetensors", tmp_path / "merge.json"
    args = ["merge", pair.zero_shot, pair.fine_tuned, "--alpha", "best", "--from", path_report]
    result = invoke(*args, "-o", output, "--report", report)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    best = json.loads(path_report.read_text())["summary"]["in_dist"]["best_alpha"]
    assert doc["command"] == "merge" and doc["config"]["alpha"] == "best"
    assert doc["summary"]["alpha"] == best == float(metadata(output)["clipsharp.alpha"])
    assert doc["summary"]["dataset"] == "in_dist" and not doc["summary"]["test_set_selection"]
    assert doc["summary"]["format"] == "open_clip" and doc["results"]["files"] == [str(output)]
    sha = doc["inputs"]["checkpoints"]["fine_tuned"]["sha256"]
    assert sha == file_sha256(pair.fine_tuned)
    shown = invoke("show", report, "--format", "md")
    assert shown.exit_code == 0, shown.output
    assert f"| alpha | {best:g} (best alpha on the in-distribution set in_dist" in shown.stdout


def test_library_merge_takes_the_options_the_command_offers(pair, path_report, tmp_path):
    """From Python, the MergeOptions of the command: an OOD set chosen by name, extrapolated."""
    from clipsharp.analyses.merge import merge
    from clipsharp.options import MergeOptions

    report = edited(
        path_report, tmp_path, lambda doc: doc["summary"]["shifted"].update(best_alpha=1.5)
    )
    options = MergeOptions("best", from_report=report, extrapolate=True, select_on="shifted")
    done = merge(pair.zero_shot, pair.fine_tuned, tmp_path / "m.safetensors", options)
    assert done.choice.alpha == 1.5 and done.choice.on_test_set
    assert done.report.config["from"] == str(report) and done.report.config["extrapolate"]
    zero_shot, fine_tuned = load_file(str(pair.zero_shot)), load_file(str(pair.fine_tuned))
    assert_formula(load_file(str(done.output)), zero_shot, fine_tuned, 1.5)

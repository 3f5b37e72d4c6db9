"""Interruptions, --resume, --fail-on gates and output paths checked before any work."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import invoke, run_options, save_checkpoint, workspace
from safetensors.torch import load_file

from clipsharp.analyses.interpolate import run_interpolation

ALPHAS = "0:1:0.02"  # 51 points on blocks of 4 images: long enough to interrupt
BLOCKS = ["--batch-size", "2", "--block-images", "4"]


def args(pair, output, *extra, command="interpolate"):
    path = ["--alphas", ALPHAS] if command != "stragglers" else []
    return [command, str(pair.zero_shot), str(pair.fine_tuned), "--ood", str(pair.shifted),
            "--device", "cpu", *path, *BLOCKS, "-o", str(output), *extra]  # fmt: skip


def start(pair, output, command="interpolate", *extra):
    env = {**os.environ, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "clipsharp", *args(pair, output, *extra, command=command)]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def images_done(journal) -> int:
    """Images finished by the journal's passes (0 while there is none)."""
    try:
        passes = json.loads(journal.read_text())["body"]["passes"]
    except (OSError, ValueError, KeyError):
        return 0  # not there yet, or replaced while we read it
    return sum(sum(state["done"]) for state in passes.values())


def wait_for_images(journal, count, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if images_done(journal) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the run never reached the expected number of images")


def strip(doc):
    return {k: v for k, v in doc.items() if k not in ("created", "timing")}


def run_whole(pair, tmp_path_factory, command, *extra):
    output = tmp_path_factory.mktemp(command) / "report.json"
    result = invoke(*args(pair, output, *extra, command=command))
    assert result.exit_code == 0, result.output
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def uninterrupted(pair, tmp_path_factory):
    return run_whole(pair, tmp_path_factory, "interpolate")


def kill_after_a_block(pair, output, command="interpolate", *extra):
    """Start a run writing ``output`` and SIGKILL it once its journal holds a block."""
    journal = output.with_name(output.name + ".partial")
    process = start(pair, output, command, *extra)
    wait_for_images(journal, 4, process)
    process.kill()
    process.wait()
    assert not output.exists() and journal.exists()
    return journal


@pytest.fixture(scope="module")
def killed_journal(pair, tmp_path_factory):
    """The journal text of an interpolate run killed after a block."""
    return kill_after_a_block(pair, tmp_path_factory.mktemp("killed") / "path.json").read_text()


def kill_then_resume(pair, tmp_path, command, *extra):
    """SIGKILL a run once it finished some blocks, resume it; the resumed report, and the
    images done before the kill."""
    output = tmp_path / "report.json"
    journal = kill_after_a_block(pair, output, command, *extra)
    done = images_done(journal)
    result = invoke(*args(pair, output, *extra, "--resume", command=command))
    assert result.exit_code == 0, result.output
    assert not journal.exists()
    return json.loads(output.read_text()), done


@pytest.mark.slow  # a subprocess killed mid-run, then resumed
def test_killed_sweep_leaves_no_report_and_resumes_to_the_same_report(
    pair, tmp_path, uninterrupted
):
    resumed, done = kill_then_resume(pair, tmp_path, "interpolate")
    assert 4 <= done < 20  # killed mid-way through the 20 images
    assert strip(resumed) == strip(uninterrupted)  # the same numbers, bit for bit


def test_resume_continues_from_the_journal_without_recomputing(pair, tmp_path):
    """Through the library: a resumed run's first progress call starts at the images done."""
    options = run_options((0.0, 0.5, 1.0), batch_size=2, block_images=4)
    ws = workspace(pair, options)
    journal = tmp_path / "report.json.partial"

    class Stop(Exception):
        pass

    def stop_after_two_blocks(event):
        if event.done == 2 * 4 * 3:  # two blocks of 4 images, 3 points
            raise Stop

    with pytest.raises(Stop):
        run_interpolation(ws, options, journal=journal, progress=stop_after_two_blocks)
    calls = []
    resumed = run_interpolation(ws, options, journal=journal, resume=True, progress=calls.append)
    assert (calls[0].task, calls[0].done, calls[0].total) == (
        "interpolate",
        4 * 3,
        20 * 3,
    )  # one block was journalled, not two:
    # the second block raised before its journal entry; it is computed again
    whole = run_interpolation(ws, options)
    assert resumed.results == whole.results and resumed.summary == whole.summary


@pytest.mark.slow  # a subprocess killed mid-run, then resumed
@pytest.mark.parametrize(
    ("command", "extra"),
    [("sharpness", ["--iterations", "2", "--rho", "0.3"]),
     ("stragglers", ["--iterations", "2", "--rho", "0.3", "--top-k", "1"])],
)  # fmt: skip
def test_sharpness_and_stragglers_resume_after_kill(
    pair, tmp_path, tmp_path_factory, command, extra
):
    resumed, done = kill_then_resume(pair, tmp_path, command, *extra)
    assert done >= 4
    assert strip(resumed) == strip(run_whole(pair, tmp_path_factory, command, *extra))


@pytest.mark.slow  # a subprocess interrupted mid-run
def test_ctrl_c_exits_130_and_writes_no_report(pair, tmp_path):
    output, journal = tmp_path / "path.json", tmp_path / "path.json.partial"
    process = start(pair, output)
    wait_for_images(journal, 4, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert not output.exists()


def test_resume_refuses_a_journal_of_another_run(pair, tmp_path):
    output = tmp_path / "path.json"
    journal = tmp_path / "path.json.partial"
    body = {"identity": {"command": "interpolate"}, "passes": {}, "results": {}}
    checksum = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    journal.write_text(json.dumps({"body": body, "sha256": checksum}))
    result = invoke(*args(pair, output, "--resume"))
    assert result.exit_code == 2
    assert "written by a run with other inputs or options" in result.stderr
    assert "config" in result.stderr and not output.exists()


@pytest.mark.slow  # the journal of a subprocess killed mid-run (killed_journal)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc["body"]["passes"]["points"]["sums"][0][0].__setitem__(0, 99), "damaged"),
        (lambda doc: doc.__setitem__("body", []), "damaged"),
        (lambda doc: doc.__setitem__("sha256", None), "damaged"),
    ],
)
def test_resume_refuses_a_damaged_or_impossible_journal(
    pair, tmp_path, killed_journal, change, message
):
    output, journal = tmp_path / "path.json", tmp_path / "path.json.partial"
    doc = json.loads(killed_journal)
    change(doc)
    journal.write_text(json.dumps(doc))
    result = invoke(*args(pair, output, "--resume"))
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not output.exists()


@pytest.mark.slow  # the journal of a subprocess killed mid-run (killed_journal)
def test_resume_refuses_impossible_sums_even_with_a_matching_checksum(
    pair, tmp_path, killed_journal
):
    output, journal = tmp_path / "path.json", tmp_path / "path.json.partial"
    doc = json.loads(killed_journal)
    doc["body"]["passes"]["points"]["sums"][0][0] = [5, 1.0, 2]  # 5 correct of 2
    doc["sha256"] = hashlib.sha256(json.dumps(doc["body"], sort_keys=True).encode()).hexdigest()
    journal.write_text(json.dumps(doc))
    result = invoke(*args(pair, output, "--resume"))
    assert result.exit_code == 2 and "impossible sums" in result.stderr, result.output


def test_resume_needs_an_output_file(pair):
    result = invoke(*args(pair, "-"), "--resume")
    assert result.exit_code == 2 and "--resume needs -o FILE" in result.stderr


def test_fail_on_failure_mode(pair, tmp_path):
    state = load_file(str(pair.zero_shot))
    state["visual.proj"] = state["visual.proj"] * (1 + 1e-6)  # a fine-tune that changed nothing
    nearly = save_checkpoint(tmp_path / "nearly.safetensors", state)
    same = ["interpolate", pair.zero_shot, nearly, "--ood", pair.shifted,
            "--device", "cpu", "--alphas", "0,1"]  # fmt: skip
    output = tmp_path / "path.json"
    result = invoke(*same, "-o", output, "--fail-on", "failure-mode")
    assert result.exit_code == 1, result.output  # no gain at all: the failure mode
    assert "--fail-on failure-mode: shifted" in result.stderr
    assert json.loads(output.read_text())["summary"]["shifted"]["failure_mode"] is True
    lenient = [*same, "--failure-threshold", "-0.5", "--fail-on", "failure-mode", "-o", "-"]
    assert invoke(*lenient).exit_code == 0
    wrong = invoke(*same, "--fail-on", "collapse")
    assert wrong.exit_code == 2 and "choose failure-mode" in wrong.stderr


def test_fail_on_collapse_names_layer_and_dataset_and_passes_unchanged_layers(pair, tmp_path):
    state = load_file(str(pair.zero_shot))
    state["visual.proj"] = state["visual.proj"] * 1.5  # one layer group moves, the rest do not
    moved = save_checkpoint(tmp_path / "moved.safetensors", state)
    same = ["layerwise", pair.zero_shot, moved, "--ood", pair.shifted, "--device", "cpu",
            "--alphas", "0,1", "--fail-on", "collapse"]  # fmt: skip
    output = tmp_path / "layers.json"
    never = invoke(*same, "--collapse-threshold", "1", "-o", output)  # no layer can collapse
    rows = json.loads(output.read_text())["summary"]["layers"]
    changed = [row["layer"] for row in rows if not row["unchanged"]]
    assert never.exit_code == 0, never.output
    assert len(changed) == 1 and len(rows) > 1  # the unchanged rows do not trip the gate
    always = invoke(*same, "--collapse-threshold", "-1", "-o", output)  # every changed layer does
    assert always.exit_code == 1, always.output
    assert f"--fail-on collapse: {changed[0]}/shifted" in always.stderr
    assert invoke("check", output, "--no-collapse").exit_code == 1  # check's gate of that name


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{zs}", "is also an input"),
        ("{tmp}/missing/path.json", "does not exist; create it first"),
        ("{tmp}", "is a folder"),
    ],
)
def test_bad_output_path_is_refused_before_any_work(pair, tmp_path, output, message):
    """The output is checked before any input is read: with a fine-tuned "checkpoint" that
    is not one, reading the checkpoints first would fail with another message."""
    unreadable = tmp_path / "ft.safetensors"
    unreadable.write_bytes(b"not a checkpoint")
    output = output.format(zs=pair.zero_shot, tmp=tmp_path)
    before = pair.zero_shot.read_bytes()
    command = args(pair, output)
    command[command.index(str(pair.fine_tuned))] = str(unreadable)
    result = invoke(*command)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "not a readable" not in result.stderr
    assert pair.zero_shot.read_bytes() == before


# ---- the library's run with an output: as safe from Python as the command ------------------


def library_inputs(pair):
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec

    checkpoints = {"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned}
    return Inputs(checkpoints, (DatasetSpec.parse(str(pair.shifted), "ood"),))


def test_library_run_refuses_an_output_that_is_an_input_before_any_work(pair):
    from clipsharp.errors import ConfigError

    before = hashlib.sha256(pair.zero_shot.read_bytes()).hexdigest()
    heard = []
    with pytest.raises(ConfigError, match="is also an input, the zero-shot checkpoint"):
        run_interpolation(
            library_inputs(pair), run_options(), output=pair.zero_shot, progress=heard.append
        )
    assert heard == []  # refused before the checkpoints were read
    assert hashlib.sha256(pair.zero_shot.read_bytes()).hexdigest() == before
    with pytest.raises(ConfigError, match="lies inside an input, the --ood dataset"):
        run_interpolation(library_inputs(pair), run_options(), output=pair.shifted / "r.json")


def test_library_run_writes_its_report_and_removes_the_journal(pair, tmp_path):
    output, journal = tmp_path / "r.json", tmp_path / "r.json.partial"
    journalled = []

    def watch(event):
        if event.task == "interpolate" and event.done:
            journalled.append(journal.exists())

    report = run_interpolation(
        library_inputs(pair), run_options(batch_size=4, block_images=8), output=output,
        progress=watch,
    )  # fmt: skip
    assert any(journalled)  # kept beside the report as the run went
    assert not journal.exists()  # and removed once the report was written
    assert output.read_text(encoding="utf-8") == report.to_json()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left


def test_inputs_of_the_command_line_options(pair):
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import InputOptions

    options = InputOptions(
        id=str(pair.in_dist),
        ood=(str(pair.shifted), f"{pair.shifted}:test"),
        model="config.json",
        allow_nonfinite=True,
    )
    built = Inputs.of({"zero_shot": str(pair.zero_shot), "fine_tuned": pair.fine_tuned}, options)
    specs = (
        DatasetSpec.parse(str(pair.in_dist), "id"),
        DatasetSpec.parse(str(pair.shifted), "ood"),
        DatasetSpec.parse(f"{pair.shifted}:test", "ood"),
    )
    assert built == Inputs(
        {"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned},
        specs,
        model="config.json",
        allow_nonfinite=True,
    )
    assert built.specs[2].split == "test"


def test_library_run_checks_its_outputs_without_a_report_file_and_against_reads(pair, tmp_path):
    """No -o: the --data-cache is still checked against the inputs; ``reads`` (the config
    file the command line read) are inputs too."""
    from dataclasses import replace

    from clipsharp.errors import ConfigError
    from clipsharp.options import DataOptions

    heard = []
    cached = replace(run_options(), data=DataOptions(cache_dir=pair.shifted))
    with pytest.raises(ConfigError, match="--data-cache .* is also an input, the --ood dataset"):
        run_interpolation(library_inputs(pair), cached, progress=heard.append)
    config = tmp_path / "clipsharp.toml"
    config.write_text('device = "cpu"\n')
    with pytest.raises(ConfigError, match="-o .* is also an input, the config file"):
        run_interpolation(
            library_inputs(pair),
            run_options(),
            output=config,
            reads=[("the config file", config)],
            progress=heard.append,
        )
    assert heard == [] and config.read_text() == 'device = "cpu"\n'

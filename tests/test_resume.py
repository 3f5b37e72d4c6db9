"""Interruptions, --resume, --fail-on gates and output paths checked before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

import clipsharp.interpolation
from clipsharp.cli import app

runner = CliRunner()
ALPHAS = "0:1:0.02"  # 51 points: long enough to interrupt


def args(pair, output, *extra):
    return ["interpolate", str(pair.zero_shot), str(pair.fine_tuned), "--ood", str(pair.shifted),
            "--device", "cpu", "--alphas", ALPHAS, "-o", str(output), *extra]  # fmt: skip


def start(pair, output):
    env = {**os.environ, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "clipsharp", *args(pair, output)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_points(journal, count, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if journal.exists():
            try:
                if len(json.loads(journal.read_text())["points"]) >= count:
                    return
            except ValueError:
                pass  # replaced while we read it
        time.sleep(0.05)
    raise AssertionError("the sweep never reached the expected number of points")


def strip(doc):
    return {k: v for k, v in doc.items() if k not in ("created", "timing")}


@pytest.fixture(scope="module")
def uninterrupted(pair, tmp_path_factory):
    output = tmp_path_factory.mktemp("whole") / "path.json"
    result = runner.invoke(app, args(pair, output))
    assert result.exit_code == 0, result.output
    return json.loads(output.read_text())


def test_killed_sweep_leaves_no_report_and_resumes_to_the_same_report(
    pair, tmp_path, uninterrupted, monkeypatch
):
    output, journal = tmp_path / "path.json", tmp_path / "path.json.partial"
    process = start(pair, output)
    wait_for_points(journal, 3, process)
    process.kill()
    process.wait()
    assert not output.exists() and journal.exists()
    recorded = len(json.loads(journal.read_text())["points"])

    calls = []
    evaluate = clipsharp.interpolation.evaluate
    monkeypatch.setattr(
        clipsharp.interpolation, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k)
    )
    result = runner.invoke(app, args(pair, output, "--resume"))
    assert result.exit_code == 0, result.output
    assert len(calls) == 51 - recorded  # the recorded points were reused, not recomputed
    assert strip(json.loads(output.read_text())) == strip(uninterrupted)
    assert not journal.exists()


def test_ctrl_c_exits_130_and_writes_no_report(pair, tmp_path):
    output, journal = tmp_path / "path.json", tmp_path / "path.json.partial"
    process = start(pair, output)
    wait_for_points(journal, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    assert not output.exists()


def test_resume_refuses_a_journal_of_another_run(pair, tmp_path):
    output = tmp_path / "path.json"
    journal = tmp_path / "path.json.partial"
    journal.write_text(json.dumps({"identity": {"command": "interpolate"}, "points": {}}))
    result = runner.invoke(app, args(pair, output, "--resume"))
    assert result.exit_code == 2
    assert "written by a run with other inputs or options" in result.stderr
    assert "config" in result.stderr and not output.exists()


def test_resume_needs_an_output_file(pair):
    result = runner.invoke(app, [*args(pair, "-"), "--resume"])
    assert result.exit_code == 2 and "--resume needs -o FILE" in result.stderr


def test_fail_on_failure_mode(pair, tmp_path):
    same = ["interpolate", str(pair.zero_shot), str(pair.zero_shot), "--ood", str(pair.shifted),
            "--device", "cpu", "--alphas", "0,1"]  # fmt: skip
    output = tmp_path / "path.json"
    result = runner.invoke(app, [*same, "-o", str(output), "--fail-on", "failure-mode"])
    assert result.exit_code == 1, result.output  # no gain at all: the failure mode
    assert "--fail-on failure-mode: shifted" in result.stderr
    assert json.loads(output.read_text())["summary"]["shifted"]["failure_mode"] is True
    lenient = [*same, "--failure-threshold", "-0.5", "--fail-on", "failure-mode", "-o", "-"]
    assert runner.invoke(app, lenient).exit_code == 0
    wrong = runner.invoke(app, [*same, "--fail-on", "collapse"])
    assert wrong.exit_code == 2 and "choose failure-mode" in wrong.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{zs}", "is also an input"),
        ("{tmp}/missing/path.json", "does not exist; create it first"),
        ("{tmp}", "is a folder"),
    ],
)
def test_bad_output_path_is_refused_before_any_work(pair, tmp_path, monkeypatch, output, message):
    import clipsharp.pipeline

    monkeypatch.setattr(clipsharp.pipeline, "open_workspace", lambda *a, **k: 1 / 0)
    output = output.format(zs=pair.zero_shot, tmp=tmp_path)
    before = pair.zero_shot.read_bytes()
    result = runner.invoke(app, args(pair, output))
    assert result.exit_code == 2 and message in result.stderr
    assert pair.zero_shot.read_bytes() == before

"""What the terminal shows: bounded progress in logs, tables in 80 columns, ``show``, help."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from datetime import timedelta

import pytest
from conftest import (
    WIDE,
    fine_tune_like,
    invoke,
    pair_args,
    run_options,
    save_checkpoint,
    succeeds,
    tiny_model,
)
from rich.console import Console

from clipsharp.cli.output import draw
from clipsharp.progress import Event, PlainProgress, Where, clock
from clipsharp.reports.tables import tables_of


def wide(*args):
    """``invoke`` in a ``WIDE`` terminal: tables uncut, whatever the one the tests run in."""
    return invoke(*args, env=WIDE)


# ----------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines_of(monkeypatch, calls) -> list[str]:
    """Feed ``(seconds, event)`` calls to PlainProgress on a fake clock."""
    fake = Clock()
    # PlainProgress reads time.monotonic and takes no clock: a fake one replays minutes at once
    monkeypatch.setattr(time, "monotonic", fake)
    lines = []
    progress = PlainProgress(lines.append)
    for seconds, event in calls:
        fake.now = 1000.0 + seconds
        progress(event)
    return lines


def test_plain_progress_is_a_line_per_10_percent_or_10_seconds(monkeypatch):
    total = 100_000  # a tick of 10 image-evaluations every 1 ms: 10 s in all
    calls = [
        (i * 0.001, Event("interpolate", 10 * i, total, point=Where(alpha=i % 11 / 10)))
        for i in range(10_001)
    ]
    lines = lines_of(monkeypatch, calls)
    assert len(lines) == 11  # the start, then each 10 % (a second apart here)
    assert lines[-1].startswith("interpolate: 100% 100.0k/100.0k evals, 0:00:10 elapsed, ")
    assert "10.0k evals/s" in lines[-1]
    assert " at α=" in lines[1] and "0:00:01 elapsed, 10.0k evals/s, eta 0:00:09" in lines[1]


def test_a_slow_task_gets_a_line_every_10_seconds_and_no_more(monkeypatch):
    calls = [(i * 0.5, Event("pretrain", i, 10_000, "steps")) for i in range(1, 1201)]  # 600 s
    lines = lines_of(monkeypatch, calls)
    elapsed = [re.search(r"(\d+:\d\d:\d\d) elapsed", line)[1] for line in lines]
    assert elapsed == [str(timedelta(seconds=10 * k)) for k in range(60)]  # 0:00:00 ... 0:09:50
    assert all(line.startswith("pretrain: ") and "/10.0k steps" in line for line in lines)


def head(done: int) -> Event:
    """The progress of a zero-shot head of ten classes."""
    return Event("zero-shot head", done, 10, "classes")


def test_a_task_restarting_often_is_not_announced_each_time(monkeypatch):
    calls = []
    for k in range(1000):  # a head re-encoded 1000 times in 100 s
        calls += [(k * 0.1, head(0)), (k * 0.1 + 0.05, head(10))]
    lines = lines_of(monkeypatch, calls)
    assert lines and lines[0].startswith("zero-shot head:   0% 0/10 classes")  # the first start
    assert len(lines) <= 2 * (100 / 10 + 1)


def test_a_task_that_finishes_again_is_timed_from_its_new_start(monkeypatch):
    # a head of ten classes reports 10/10 only, once per encoding
    calls = [(0, head(10)), (60, head(10))]
    lines = lines_of(monkeypatch, calls)
    assert len(lines) == 2 and all("100% 10/10 classes, 0:00:00 elapsed" in x for x in lines)


def test_a_step_without_a_count_is_told_when_slow(monkeypatch):
    quick = [(0, Event("reading checkpoints", 0, 0)), (0.2, Event("reading checkpoints", 1, 1))]
    assert lines_of(monkeypatch, quick) == []
    slow = [(0, Event("opening datasets", 0, 0)), (3.0, Event("opening datasets", 1, 1))]
    assert lines_of(monkeypatch, slow) == ["opening datasets: done in 3.0 s"]


def test_a_run_with_many_points_logs_few_lines(pair):
    result = wide("interpolate", *pair_args(pair, "--alphas", "0:1:0.01", "--batch-size", "2",
                                            "--block-images", "2", "-o", "-"))  # fmt: skip
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if "% " in line]
    assert 1 <= len(progress) <= 13  # 101 points x 22 blocks: 2,222 calls
    assert progress[-1].startswith("interpolate: 100% ")


@pytest.mark.parametrize(
    ("where", "shown"),
    [
        (Where(alpha=0.5), "α=0.5"),
        (Where(layer="visual.block.3", alpha=0.25), "visual.block.3 α=0.25"),
        (Where(alpha=0.5, rho=0.1, draw=3), "α=0.5 ρ=0.1 draw 3"),
        (Where(alpha=0.0, rho=0.0, draw=0), "α=0.0 ρ=0.0 draw 0"),  # zeros are shown
        (
            Where("fine_tuned", "visual.block.0", rho=1.0, draw=2),
            "fine_tuned visual.block.0 ρ=1.0 draw 2",
        ),
        (Where("background"), "background"),
    ],
)
def test_points_are_named_in_the_papers_words(where, shown):
    assert str(where) == shown


def test_the_clock_reads_hours_minutes_seconds():
    assert clock(0) == "0:00:00" and clock(59.6) == "0:01:00"
    assert clock(3725) == "1:02:05" and clock(36_000) == "10:00:00"


def test_plain_progress_prints_on_stderr_by_default(capsys):
    progress = PlainProgress()
    progress(Event("fine-tune \x1b[2Jx", 0, 10, "steps"))
    captured = capsys.readouterr()
    assert (
        captured.out == ""
        and captured.err == "fine-tune \\x1b[2Jx:   0% 0/10 steps, 0:00:00 elapsed\n"
    )


def test_commands_name_the_last_point_of_each_pass(made):
    """What a log shows of a run: the pass's last point, in the paper's words."""
    assert re.search(
        r"^interpolate: 100% 132/132 evals, .* at α=1\.0$", made["interpolate"][1], re.M
    )
    assert re.search(
        r"^layerwise: 100% 396/396 evals, .* at visual\.head α=0\.5$", made["layerwise"][1], re.M
    )
    assert re.search(r"^sharpness: 100% .* at α=1\.0 ρ=0\.3 draw 1$", made["sharpness"][1], re.M)
    last = r"^layer sharpness: 100% .* at zero_shot visual\.head ρ=1\.0 draw 1$"
    assert re.search(last, made["stragglers"][1], re.M)


def test_bars_at_a_terminal_name_the_task_and_its_point():
    from clipsharp.cli.progress import progress_bars

    out = Console(force_terminal=True, record=True, width=120)
    with progress_bars(out) as progress:
        progress(Event("sharpness", 0, 60))
        progress(Event("sharpness", 30, 60, point=Where(alpha=0.5, rho=0.1, draw=3)))
        progress(Event("fine-tune [x]", 1, 4, "steps"))  # a name that looks like markup
    shown = out.export_text()  # the frames drawn, one after the other
    # the rate follows once time has passed between two events, which a fast run may not see
    assert re.search(r"sharpness α=0\.5 ρ=0\.1 draw 3 ━+ +50% 30/60 evals\b", shown)
    assert re.search(r"fine-tune \[x\] +━+ +25% 1/4 steps ", shown)


def interpolate_from_python(pair, progress) -> None:
    """``run_interpolation`` of the tiny pair on the OOD set at alphas 0, 0.5, 1."""
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec

    inputs = Inputs({"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned},
                    (DatasetSpec.parse(str(pair.shifted), "ood"),))  # fmt: skip
    run_interpolation(inputs, run_options((0.0, 0.5, 1.0), batch_size=4), progress=progress)


def test_a_python_caller_gets_log_lines_without_the_cli(pair):
    lines = []
    interpolate_from_python(pair, progress=PlainProgress(lines.append))
    first = next(line for line in lines if line.startswith("interpolate:"))
    assert first == "interpolate:   0% 0/60 evals, 0:00:00 elapsed"
    assert re.fullmatch(
        r"interpolate: 100% 60/60 evals, \d:\d\d:\d\d elapsed, .* at α=1\.0", lines[-1]
    )
    assert "zero-shot head: 100% 4/4 classes, 0:00:00 elapsed" in lines


def test_library_reports_points_and_steps(pair):
    calls = []
    interpolate_from_python(pair, progress=calls.append)
    tasks = [event.task for event in calls]
    assert tasks[:4] == ["reading checkpoints"] * 2 + ["opening datasets"] * 2
    head = [(e.done, e.total, e.unit) for e in calls if e.task == "zero-shot head"]
    assert head == [(4, 4, "classes")]  # the 4 class names, encoded once (the text tower stays)
    assert Event("interpolate", 20 * 2, 20 * 3, point=Where(alpha=0.5)) in calls  # images x points
    assert calls[-1] == Event("interpolate", 60, 60, "evals", point=Where(alpha=1.0))


# ----------------------------------------------------------------------------- tables, show

KINDS = ("interpolate", "layerwise", "sharpness", "stragglers", "prune", "inspect", "study")


@pytest.fixture(scope="module")
def made(pair, cli_report, tmp_path_factory):
    """Each kind of report, written by its command, and what the command printed."""
    root = tmp_path_factory.mktemp("terminal")
    path = ["--alphas", "0,0.5,1"]
    measure = ["--iterations", "2", "--rho", "0.1,0.3"]
    commands = {
        "interpolate": ["interpolate", *pair_args(pair, *path)],
        "layerwise": ["layerwise", *pair_args(pair, *path), "--layers", "visual.*"],
        "sharpness": ["sharpness", *pair_args(pair, *path, *measure)],
        "stragglers": ["stragglers", *pair_args(pair, *measure[:2]), "--top-k", "1"],
        "inspect": ["inspect", pair.zero_shot, pair.fine_tuned],
    }
    done = {}
    for kind, args in commands.items():
        report, result = cli_report(*args)
        done[kind] = (report, result.stderr)
    result = succeeds("prune", pair.fine_tuned, "--layers", "visual.block.0",
                      "--zero-shot", pair.zero_shot, "--ood", pair.shifted, *path,
                      "--device", "cpu", "-o", root / "pruned.safetensors",
                      "--report", root / "prune.json", env=WIDE)  # fmt: skip
    done["prune"] = (root / "prune.json", result.stderr)
    fine_tunes = []
    for seed in (1, 2, 3):  # study: three "fine-tunes" (the same pair, renamed)
        other = save_checkpoint(root / f"ft{seed}.safetensors",
                                fine_tune_like(tiny_model(0).state_dict(), seed=seed))  # fmt: skip
        report = root / f"interpolate-{seed}.json"
        succeeds("interpolate", pair.zero_shot, other, "--ood", pair.shifted,
                 "--device", "cpu", *path, "-o", report)  # fmt: skip
        fine_tunes.append(report)
    result = succeeds("study", *fine_tunes, "-o", root / "study.json", env=WIDE)
    done["study"] = (root / "study.json", result.stderr)
    return done


def drawn(doc: dict) -> str:
    """The report's summary tables as an 80-column terminal shows them."""
    out = Console(width=80, record=True)
    for table in tables_of(doc):
        out.print(draw(table))
    return out.export_text()


@pytest.mark.parametrize("kind", KINDS)
def test_every_table_fits_80_columns_uncut(made, kind):
    doc = json.loads(made[kind][0].read_text())
    text = drawn(doc)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text


def test_study_lists_measures_without_a_correlation_under_its_table(made):
    """A long reason in a column would push the table past 80 columns: such measures are
    named under the table, grouped by reason, and have no row."""
    doc = json.loads(made["study"][0].read_text())
    found = next(iter(doc["summary"]["correlations"].values()))
    reason = "the measure is the same for every model"
    for measure in list(found)[:2]:
        found[measure] |= {"spearman": None, "interval": None, "reason": reason}
    text = drawn(doc)
    assert max(len(line) for line in text.splitlines()) <= 80
    for measure in list(found)[:2]:  # no row of their own: the name, then the count n
        assert not re.search(rf"^{re.escape(measure)}\s+\d", text, re.M)
    caption = " ".join(text.split()).split(f"no correlation, {reason}: ")[1]
    assert all(measure in caption for measure in list(found)[:2])


# study reports hold inputs.checkpoints as a count, which read_report refuses (a known gap)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "study"])
def test_show_prints_what_the_command_printed(made, kind):
    path, printed = made[kind]
    shown = wide("show", path)
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.strip() and shown.stderr in printed
    md = wide("show", path, "--format", "md")
    assert md.exit_code == 0 and md.stdout.count("\n| ") >= 1 and "|---" in md.stdout


def test_show_refuses_what_is_not_a_report(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    result = wide("show", tmp_path / "x.json")
    assert result.exit_code == 2 and "clipsharp show: error:" in result.stderr
    assert wide("show", tmp_path / "missing.json").exit_code == 2


def test_interpolate_path_table_keeps_every_number(made):
    doc = json.loads(made["interpolate"][0].read_text())
    text = drawn(doc)
    for summary in doc["summary"].values():
        assert f"{summary['gain']:+.3f}" in text and f"{summary['best_accuracy']:.3f}" in text


# ----------------------------------------------------------------------------- warnings, check


def test_interpolate_warns_when_both_ends_are_at_chance(made, tmp_path):
    doc = json.loads(made["interpolate"][0].read_text())
    classes = {d["name"]: d["num_classes"] for d in doc["inputs"]["datasets"]}
    for point in doc["results"]["path"]:  # in_dist well above chance, shifted at chance
        point["metrics"]["in_dist"]["accuracy"] = 0.9
        point["metrics"]["shifted"]["accuracy"] = 1 / classes["shifted"]
    chance = tmp_path / "chance.json"
    chance.write_text(json.dumps(doc))
    shown = wide("show", chance)
    assert shown.exit_code == 0, shown.output
    warnings = [line for line in shown.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "shifted" in warnings[0] and "both" in warnings[0]
    for point in doc["results"]["path"]:
        point["metrics"]["shifted"]["accuracy"] = 0.9
    chance.write_text(json.dumps(doc))
    assert "warning:" not in wide("show", chance).stderr


def test_check_rounds_what_it_prints():
    from clipsharp.reports.gates import show_value

    assert show_value(3.9541124922146946) == "3.954"
    assert show_value(0.01 - 1e-9, near=0.01) == repr(0.01 - 1e-9)  # told apart from 0.01
    assert show_value(0.0) == "0.0" and show_value(True) == "true"


# ----------------------------------------------------------------------------- help, files


def test_help_names_what_to_type():
    text = wide("interpolate", "--help").output
    for metavar in ("ZERO_SHOT", "FINE_TUNED", "SPEC", "A,B,C|START:STOP:STEP", "FILE", "DIR",
                    "REGEX", "NAME"):  # fmt: skip
        assert metavar in text, metavar
    assert "<bool>" not in text and "BOOLEAN" not in text
    assert "Failure mode is judged on these" in text
    sharpness = wide("sharpness", "--help").output
    assert "Failure mode" not in sharpness and "<bool>" not in sharpness


def test_help_labels_defaults_from_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "clipsharp.toml").write_text("batch-size = 64\n")
    monkeypatch.chdir(tmp_path)
    text = " ".join(wide("interpolate", "--help").output.split())
    assert "64 from clipsharp.toml" in text


def test_written_files_honour_the_umask(tmp_path):
    from clipsharp.files import write_atomic

    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_reports_and_checkpoints_of_a_command_are_0644(pair, tmp_path):
    previous = os.umask(0o022)
    try:
        pruned, report = tmp_path / "p.safetensors", tmp_path / "p.json"
        result = wide("prune", pair.fine_tuned, "--layers", "visual.block.0", "-o", pruned,
                      "--report", report)  # fmt: skip
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for path in (pruned, report):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

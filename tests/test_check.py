"""``check``: thresholds at their boundaries (one tolerance), failing closed, baselines, formats."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import invoke, pair_args

from clipsharp.errors import ConfigError
from clipsharp.reports.gates import TOLERANCE, Gates, Requirement, passes, run_checks
from clipsharp.reports.report import SCHEMA

OLD = Path("old.json")  # a baseline's name; run_checks is given the document itself


def interpolate_report(**shifted) -> dict:
    """A crafted interpolate report: an ID set and an OOD set (fields of ``shifted`` replaced)."""
    return {
        "schema": SCHEMA,
        "command": "interpolate",
        "inputs": {
            "datasets": [
                {"name": "in_dist", "role": "id", "fingerprint": "a"},
                {"name": "shifted", "role": "ood", "fingerprint": "b"},
            ]
        },
        "summary": {
            "in_dist": {"best_alpha": 1.0, "best_accuracy": 0.9, "gain": 0.3, "depth": 0.0,
                        "barrier": -0.2, "failure_mode": None},
            "shifted": {"best_alpha": 0.5, "best_accuracy": 0.6, "gain": 0.04, "depth": 0.3,
                        "barrier": 0.1, "failure_mode": False, **shifted},
        },
    }  # fmt: skip


def write(tmp_path, doc: dict, name: str = "path.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def failed_fields(verdict) -> list[tuple]:
    return [(c.dataset, c.field) for c in verdict.failures]


# ----------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize(
    ("gates", "field", "at", "within", "outside"),
    [
        (Gates(min_gain=0.01), "gain", 0.01, 0.01 - 1e-10, 0.01 - 1e-8),
        (Gates(max_depth=0.5), "depth", 0.5, 0.5 + 1e-10, 0.5 + 1e-8),
        (Gates(max_barrier=0.25), "barrier", 0.25, 0.25 + 1e-10, 0.25 + 1e-8),
    ],
)
def test_named_thresholds_pass_at_the_boundary_and_fail_just_past_it(
    gates, field, at, within, outside
):
    assert run_checks(interpolate_report(**{field: at}), gates).passed
    assert run_checks(interpolate_report(**{field: within}), gates).passed  # equal within 1e-9
    verdict = run_checks(interpolate_report(**{field: outside}), gates)
    assert not verdict.passed and failed_fields(verdict) == [("shifted", field)]
    assert verdict.failures[0].value == outside and repr(outside) in verdict.failures[0].message


@pytest.mark.parametrize(
    ("op", "equal", "just_below", "just_above"),
    [("<=", True, True, False), (">=", True, False, True), ("<", False, True, False),
     (">", False, False, True), ("==", True, False, False)],
)  # fmt: skip
def test_one_tolerance_for_every_operator(op, equal, just_below, just_above):
    """Within 1e-9 of the threshold is equal to it; 1e-8 away is not."""
    assert 0.9 - 0.89 != 0.01 and abs(0.9 - 0.89 - 0.01) < TOLERANCE  # why a tolerance at all
    for offset in (0.0, 1e-10, -1e-10, 0.9 - 0.89 - 0.01):
        assert passes(0.01 + offset, op, 0.01) is equal, offset
    assert passes(0.01 - 1e-8, op, 0.01) is just_below
    assert passes(0.01 + 1e-8, op, 0.01) is just_above
    assert passes(False, "==", False) and not passes(0, "==", False)  # true / false: exactly


def test_gain_gates_ood_sets_and_depth_every_set():
    doc = interpolate_report()
    doc["summary"]["in_dist"]["gain"] = -0.5  # not gated by --min-gain: an ID set
    doc["summary"]["in_dist"]["depth"] = 0.7  # gated by --max-depth: every set
    verdict = run_checks(doc, Gates(min_gain=0.0, max_depth=0.5, no_failure_mode=True))
    assert [(c.dataset, c.field, c.passed) for c in verdict.checks] == [
        ("shifted", "gain", True),
        ("in_dist", "depth", False),
        ("shifted", "depth", True),
        ("shifted", "failure_mode", True),
    ]
    only_id = run_checks(doc, Gates(min_gain=0.0, datasets=("in_dist",)))
    assert failed_fields(only_id) == [("in_dist", "gain")]


def test_failure_mode_and_require_expressions():
    assert failed_fields(run_checks(interpolate_report(failure_mode=True), Gates(
        no_failure_mode=True))) == [("shifted", "failure_mode")]  # fmt: skip
    gates = Gates(require=("shifted.gain>=0.04", "*.best_accuracy > 0.6",
                           "shifted.failure_mode==false"))  # fmt: skip
    verdict = run_checks(interpolate_report(), gates)
    assert [(c.dataset, c.field, c.passed) for c in verdict.checks] == [
        ("shifted", "gain", True),  # 0.04 >= 0.04
        ("in_dist", "best_accuracy", True),
        ("shifted", "best_accuracy", False),  # 0.6 > 0.6 is false
        ("shifted", "failure_mode", True),
    ]


def test_max_sharpness_reads_every_rho_of_a_sharpness_summary():
    doc = {"schema": SCHEMA, "command": "sharpness",
           "inputs": {"datasets": [{"name": "shifted", "role": "ood"}]},
           "summary": {"shifted": [{"rho": 0.1, "max_sharpness": 0.2},
                                   {"rho": 1.0, "max_sharpness": 0.9}]}}  # fmt: skip
    verdict = run_checks(doc, Gates(max_sharpness=0.5))
    assert [(c.field, c.passed) for c in verdict.checks] == [
        ("0.max_sharpness", True),
        ("1.max_sharpness", False),
    ]
    assert "(rho 1)" in verdict.failures[0].message
    assert run_checks(doc, Gates(max_sharpness=0.9)).passed
    each_rho = Gates(require=("shifted.max_sharpness<=0.5",))
    assert [c.passed for c in run_checks(doc, each_rho).checks] == [True, False]


def layerwise_report(*rows: tuple[str, bool | None]) -> dict:
    """A crafted layerwise report: one row per (layer, collapse on shifted; None: unchanged)."""

    def row(layer, collapse):
        if collapse is None:
            return {"layer": layer, "unchanged": True}
        return {
            "layer": layer,
            "unchanged": False,
            "in_dist": {"collapse": False},
            "shifted": {"collapse": collapse},
        }

    return {"schema": SCHEMA, "command": "layerwise",
            "inputs": {"datasets": [{"name": "in_dist", "role": "id"},
                                    {"name": "shifted", "role": "ood"}]},
            "summary": {"layers": [row(*r) for r in rows]}}  # fmt: skip


def test_no_collapse_gates_each_changed_layer_on_every_dataset():
    doc = layerwise_report(("visual.block.0", False), ("text.block.0", None), ("head", True))
    verdict = run_checks(doc, Gates(no_collapse=True))
    assert [(c.dataset, c.field, c.passed) for c in verdict.checks] == [
        ("in_dist", "layers.0.collapse", True),
        ("in_dist", "layers.2.collapse", True),
        ("shifted", "layers.0.collapse", True),
        ("shifted", "layers.2.collapse", False),  # the unchanged layer 1: not evaluated, not gated
    ]
    failure = verdict.failures[0]
    assert failure.subject == "head/shifted"
    assert (
        failure.message == "summary.layers.2.shifted.collapse (layer head) = true, needs == false"
    )
    only = run_checks(doc, Gates(no_collapse=True, datasets=("in_dist",)))
    assert only.passed and {c.dataset for c in only.checks} == {"in_dist"}
    nothing = run_checks(layerwise_report(("text.block.0", None)), Gates(no_collapse=True))
    assert not nothing.passed and nothing.failures[0].value is None  # fails closed, named
    assert nothing.failures[0].message.startswith("summary.layers.*.in_dist.collapse is missing")
    other = run_checks(interpolate_report(), Gates(no_collapse=True))
    assert other.failures[0].message.startswith(
        "summary.layers.*.in_dist.collapse is missing (found: in_dist, shifted)"
    )


def test_a_leading_star_stands_for_the_gated_datasets():
    gates = Gates(require=("*.gain>0",), datasets=("shifted", "imagenet"))
    verdict = run_checks(interpolate_report(), gates)
    assert [(c.dataset, c.passed) for c in verdict.checks] == [
        ("shifted", True),
        ("imagenet", False),
    ]
    assert "summary.imagenet.gain is missing" in verdict.failures[0].message
    no_inputs = interpolate_report()
    del no_inputs["inputs"]
    verdict = run_checks(no_inputs, Gates(require=("*.gain>0",)))
    assert "--require '*.gain>0': the report has no dataset to gate" in verdict.checks[0].message


@pytest.mark.parametrize(
    ("fail_on", "doc", "tripped"),
    [
        ("failure-mode", interpolate_report(failure_mode=True), "shifted"),
        ("failure-mode", interpolate_report(), None),
        ("collapse", layerwise_report(("a", True), ("b", None), ("c", True)),
         "a/shifted, c/shifted"),
        ("collapse", layerwise_report(("a", False), ("b", None)), None),
        ("collapse", layerwise_report(("b", None)), None),  # every layer unchanged: nothing trips
    ],
)  # fmt: skip
def test_fail_on_is_the_check_of_the_same_name(fail_on, doc, tripped):
    """--fail-on runs check's --no-failure-mode / --no-collapse; only a value trips it."""
    from clipsharp.reports.gates import tripped as what_trips

    assert what_trips(doc, fail_on) == ([] if tripped is None else tripped.split(", "))
    if tripped is not None:
        flag = {"failure-mode": "no_failure_mode", "collapse": "no_collapse"}[fail_on]
        assert not run_checks(doc, Gates(**{flag: True})).passed  # check fails on it too


# ----------------------------------------------------------------------------- fail closed


def test_fails_closed_on_missing_null_and_empty():
    doc = interpolate_report()
    del doc["summary"]["shifted"]["depth"]
    doc["summary"]["shifted"]["barrier"] = None
    verdict = run_checks(doc, Gates(max_depth=1.0, max_barrier=1.0))
    assert failed_fields(verdict) == [("shifted", "depth"), ("shifted", "barrier")]
    assert "summary.shifted.depth is missing" in verdict.failures[0].message
    assert "summary.shifted.barrier is null" in verdict.failures[1].message
    empty = interpolate_report()
    empty["summary"] = {}
    verdict = run_checks(empty, Gates(min_gain=0.0))
    assert not verdict.passed and "empty summary" in verdict.checks[0].message
    no_ood = interpolate_report()
    no_ood["inputs"]["datasets"][1]["role"] = "id"
    verdict = run_checks(no_ood, Gates(min_gain=0.0))
    assert not verdict.passed and "no ood dataset to gate" in verdict.checks[0].message
    unknown = run_checks(interpolate_report(), Gates(max_depth=1.0, datasets=("imagenet",)))
    assert failed_fields(unknown) == [("imagenet", "depth")]
    wildcard = run_checks(interpolate_report(), Gates(require=("*.nope<1",)))
    assert failed_fields(wildcard) == [("in_dist", "nope"), ("shifted", "nope")]
    wrong_kind = run_checks(interpolate_report(), Gates(max_sharpness=1.0))
    assert failed_fields(wrong_kind) == [("in_dist", "max_sharpness"), ("shifted", "max_sharpness")]
    assert "max_sharpness is missing (found: best_alpha" in wrong_kind.failures[0].message


@pytest.mark.parametrize(
    "text", ["shifted.gain", "shifted.gain>>1", "gain>=x", "a..b<1", "*.gain<nan", "x<true", "=1"]
)
def test_malformed_require_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--require"):
        Requirement.parse(text)


# ----------------------------------------------------------------------------- baseline


@pytest.mark.parametrize(
    ("max_drop", "old_accuracy", "new_accuracy", "passed"),
    [
        ("0.01", 0.9, 0.89, True),  # 0.9 - 0.89 = 0.010000000000000009: 0.01 within 1e-9
        ("0.01", 0.9, 0.88999999, False),  # a drop 1e-8 past 0.01: outside the tolerance
        ("0.01", 0.6, 0.59, True),
        ("0.01", 0.6, 0.58999999, False),
        ("10%", 0.6, 0.54, True),  # 10% of 0.6 = 0.06
        ("10%", 0.6, 0.53999999, False),
        ("0", 0.6, 0.6, True),
    ],
)
def test_baseline_drop_at_the_boundary(max_drop, old_accuracy, new_accuracy, passed):
    old = interpolate_report(best_accuracy=old_accuracy)
    new = interpolate_report(best_accuracy=new_accuracy)
    verdict = run_checks(new, Gates(max_drop=max_drop, baseline=OLD), old)
    assert verdict.passed is passed
    assert failed_fields(verdict) == ([] if passed else [("shifted", "best_accuracy")])


def test_baseline_names_a_dropped_dataset_and_refuses_other_commands():
    old, new = interpolate_report(), interpolate_report()
    del new["summary"]["in_dist"]
    verdict = run_checks(new, Gates(max_drop="0.01", baseline=OLD), old, report_name="new.json",
                         baseline_name="old.json")  # fmt: skip
    assert "dataset in_dist of old.json is missing from new.json" in verdict.failures[0].message
    new["inputs"]["datasets"][1]["fingerprint"] = "other data"
    verdict = run_checks(new, Gates(max_drop="0.01", baseline=OLD), old)
    assert "differs from the baseline's" in verdict.checks[-1].message
    other = copy.deepcopy(old) | {"command": "sharpness"}
    with pytest.raises(ConfigError, match="same command"):
        run_checks(new, Gates(max_drop="0.01", baseline=OLD), other)
    with pytest.raises(ConfigError, match="--max-drop '-1%' is not a non-negative number"):
        Gates(max_drop="-1%", baseline=OLD)
    with pytest.raises(ConfigError, match="--baseline and --max-drop go together"):
        run_checks(new, Gates(max_drop="0.01", baseline=OLD))  # the baseline's document not given


# ----------------------------------------------------------------------------- command line


def test_cli_exit_codes_and_formats(tmp_path):
    path = write(tmp_path, interpolate_report(gain=0.01))
    assert invoke("check", path, "--min-gain", "0.01").exit_code == 0
    failing = invoke("check", path, "--min-gain", "0.02", "--format", "json")
    assert failing.exit_code == 1
    verdict = json.loads(failing.stdout)
    assert verdict["passed"] is False
    message = "summary.shifted.gain = 0.01, needs >= 0.02"
    assert verdict["checks"] == [{"dataset": "shifted", "field": "gain", "op": ">=",
                                  "threshold": 0.02, "value": 0.01, "passed": False,
                                  "message": message}]  # fmt: skip
    md = invoke(
        "check", path, "--max-depth", "0.3", "--require", "in_dist.gain>0.5", "--format", "md"
    )
    assert md.exit_code == 1
    lines = md.stdout.splitlines()
    assert lines[0].startswith("**❌ clipsharp check failed**: 1 of 3 checks failed")
    rows = [line for line in lines if line.startswith("| ✅") or line.startswith("| ❌")]
    assert rows == [
        "| ✅ | in_dist | depth | <= 0.3 | 0.0 | summary.in_dist.depth = 0.0 <= 0.3 |",
        "| ✅ | shifted | depth | <= 0.3 | 0.3 | summary.shifted.depth = 0.3 <= 0.3 |",
        "| ❌ | in_dist | gain | > 0.5 | 0.3 | summary.in_dist.gain = 0.3, needs > 0.5 |",
    ]
    table = invoke("check", path, "--no-failure-mode")
    assert table.exit_code == 0 and "failure_mode" in table.stderr and table.stdout == ""


def test_cli_baseline(tmp_path):
    old = write(tmp_path, interpolate_report(), "old.json")
    new = write(tmp_path, interpolate_report(gain=0.02), "new.json")
    assert invoke("check", new, "--baseline", old, "--max-drop", "0.02").exit_code == 0
    halved = invoke("check", new, "--baseline", old, "--max-drop", "50%")  # 0.04 -> 0.02
    assert halved.exit_code == 0
    result = invoke("check", new, "--baseline", old, "--max-drop", "49%", "--format", "json")
    assert result.exit_code == 1
    failed = [c for c in json.loads(result.stdout)["checks"] if not c["passed"]]
    assert [(c["dataset"], c["field"], c["value"]) for c in failed] == [("shifted", "gain", 0.02)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--require", "shifted.gain=>0.1"], "--require 'shifted.gain=>0.1'"),
        ([], "nothing to check"),
        (["--min-gain", "0", "--format", "xml"], "--format 'xml'"),
        (["--baseline", "{path}"], "--baseline and --max-drop go together"),
        (["--min-gain", "nan"], "not a finite number"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path, args, message):
    path = write(tmp_path, interpolate_report())
    result = invoke("check", path, *[a.format(path=path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_refuses_other_schemas_and_missing_files(tmp_path):
    other = write(tmp_path, interpolate_report() | {"schema": "other/2"})
    result = invoke("check", other, "--min-gain", "0")
    assert result.exit_code == 2 and "has schema 'other/2'" in result.stderr
    result = invoke("check", tmp_path / "none.json", "--min-gain", "0")
    assert result.exit_code == 2 and "none.json does not exist" in result.stderr


def test_a_real_interpolate_report(pair, cli_report):
    path, _ = cli_report("interpolate", *pair_args(pair, "--alphas", "0,0.5,1"))
    gain = json.loads(path.read_text())["summary"]["shifted"]["gain"]
    assert invoke("check", path, "--min-gain", repr(gain), "--max-depth", "100").exit_code == 0
    just_above = invoke("check", path, "--min-gain", repr(gain + 1e-8), "--format", "json")
    assert just_above.exit_code == 1
    assert json.loads(just_above.stdout)["checks"][0]["value"] == gain

"""``check``: a CI gate on a report — requirements on its summary, drops against a baseline.

One mechanism: every gate is a :class:`Requirement`, ``value OP threshold`` at a path in
``summary``. ``--min-gain 0.01`` is ``<dataset>.gain >= 0.01`` on each gated dataset (the
report's datasets of the requirement's roles, or ``Gates.datasets``: ``docs/ci.md``);
``--require`` writes one out, a leading ``*`` standing for the gated datasets; ``--fail-on``
of interpolate / layerwise is ``--no-failure-mode`` / ``--no-collapse``. Fail closed: a field
missing, null or not a number, an empty summary or no dataset to gate is a failed check.

Tolerance: every comparison (drops against a baseline included) holds two numbers within
``TOLERANCE`` = 1e-9 equal: ``<=`` passes at value <= threshold + 1e-9, ``<`` at value <
threshold - 1e-9, ``==`` at |value - threshold| <= 1e-9; true / false compare exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import option

TOLERANCE = 1e-9  # two numbers this close are equal in every comparison of a gate
OPS = ("<=", ">=", "<", ">", "==")
EACH = "<dataset>"  # in a path: each gated dataset (never typed: a --require FIELD holds no <)
OOD = ("ood",)
NAMED = {  # Gates field -> the path it gates, OP, the roles it gates by default (None: all)
    "min_gain": ((EACH, "gain"), ">=", OOD),
    "max_depth": ((EACH, "depth"), "<=", None),
    "max_barrier": ((EACH, "barrier"), "<=", None),
    "max_sharpness": ((EACH, "max_sharpness"), "<=", None),  # every rho of a sharpness summary
    "no_failure_mode": ((EACH, "failure_mode"), "==", OOD),  # a switch: == false
    "no_collapse": (("layers", "*", EACH, "collapse"), "==", None),  # a switch: == false
}
BASELINE_FIELDS = {"interpolate": ("best_accuracy", "gain")}  # command -> fields, higher is better
TOGETHER = "--baseline and --max-drop go together: give both or neither"
GATES, BASELINE = "Gates", "Baseline"  # --help panels
_REQUIRE = re.compile(r"^\s*([^\s<>=]+)\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


def passes(value: float | bool, op: str, threshold: float | bool) -> bool:
    """``value OP threshold``, two numbers within ``TOLERANCE`` counting as equal."""
    if isinstance(threshold, bool):
        return value is threshold  # == only
    equal = abs(value - threshold) <= TOLERANCE
    below, above = value < threshold and not equal, value > threshold and not equal
    return {"<=": not above, ">=": not below, "<": below, ">": above, "==": equal}[op]


@dataclass(frozen=True)
class Requirement:
    """``value OP threshold`` at a path inside ``summary``: a named threshold or a --require."""

    path: tuple[str, ...]  # ("shifted", "gain"), (EACH, "gain"), ("shifted", "0", "fine_tuned")
    op: str  # one of OPS
    threshold: float | bool  # true / false only with ==
    name: str  # as messages name it: "--min-gain", "--require '*.gain>0'"
    roles: tuple[str, ...] | None = None  # the datasets EACH stands for by default; None: all

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, bool) and not math.isfinite(self.threshold):
            raise ConfigError(f"{self.name} {self.threshold} is not a finite number")

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """``--require FIELD<OP>VALUE``: FIELD a dotted path, ``*`` matching every key."""
        match, name = _REQUIRE.match(text), f"--require {text!r}"
        if not match:
            raise ConfigError(
                f"{name} is not FIELD<OP>VALUE; write e.g. 'shifted.gain>=0.02' "
                f"(OP: {', '.join(OPS)})"
            )
        field, op, raw = match.groups()
        path = tuple(field.split("."))
        if not all(path):
            raise ConfigError(f"{name}: {field!r} has an empty part; write a.b.c")
        path = (EACH, *path[1:]) if path[0] == "*" else path
        if raw in ("true", "false"):
            if op != "==":
                raise ConfigError(f"{name}: true / false compare only with ==")
            return cls(path, op, raw == "true", name)
        try:
            return cls(path, op, float(raw), name)
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a finite number (or true / false)") from None


def allowed_drop(max_drop: str, old: float) -> float:
    """The largest drop ``--max-drop`` allows from ``old``: X (absolute), or X% of |old|."""
    try:
        amount = float(max_drop.strip().removesuffix("%"))
    except ValueError:
        amount = math.nan
    if not math.isfinite(amount) or amount < 0:
        raise ConfigError(f"--max-drop {max_drop!r} is not a non-negative number; write 0.01 or 1%")
    return amount * abs(old) / 100 if max_drop.strip().endswith("%") else amount


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``a,b`` -> ("a", "b") (None: no --datasets)."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ConfigError(f"--datasets {text!r} names no dataset; write a,b")
    return names


def _threshold(text: str) -> Any:
    """A named threshold's flag: a number X, the field untested when not given."""
    return option(None, text, metavar="X", panel=GATES)


@dataclass(frozen=True)
class Gates:
    """Everything ``check`` tests, each field one of its flags; None / False / (): not tested."""

    min_gain: float | None = _threshold("Each OOD dataset: gain >= this.")
    max_depth: float | None = _threshold("Each dataset: depth <= this.")
    max_barrier: float | None = _threshold("Each dataset: barrier <= this.")
    max_sharpness: float | None = _threshold(
        "Sharpness reports, each dataset and rho: max_sharpness <= this."
    )
    no_failure_mode: bool = option(
        False, "Fail when any OOD dataset has failure_mode true.", panel=GATES
    )
    no_collapse: bool = option(
        False, "Fail when a layer collapses on any dataset (layerwise).", panel=GATES
    )
    require: tuple[str, ...] = option(
        (),
        "FIELD<OP>VALUE on a dotted path in summary, OP one of <= >= < > ==; "
        "'*' matches every dataset (or element): 'shifted.gain>=0.02', '*.gain>0'. "
        "Repeatable.",
        metavar="FIELD<OP>VALUE",
        panel=GATES,
    )
    datasets: tuple[str, ...] | None = option(
        None,
        "Gate exactly these datasets (comma-separated) with every threshold, and "
        "with '*' in --require. Default: gain and failure mode on OOD sets, the rest "
        "on every set.",
        metavar="NAMES",
        panel=GATES,
        parse=parse_names,
    )
    baseline: Path | None = option(
        None,
        "An earlier report of the same command to compare with.",
        metavar="REPORT",
        panel=BASELINE,
    )
    max_drop: str | None = option(
        None,
        "With --baseline: best_accuracy and gain of each baseline dataset may drop "
        "by at most this (absolute, 0.01) or this percentage of the baseline (1%).",
        metavar="X|P%",
        panel=BASELINE,
    )

    def __post_init__(self) -> None:
        if (self.baseline is None) != (self.max_drop is None):
            raise ConfigError(TOGETHER)
        if self.max_drop is not None:
            allowed_drop(self.max_drop, 0.0)  # refuses a malformed one
        if not (self.requirements() or self.max_drop):
            named = ", ".join(map(_flag, NAMED))
            raise ConfigError(
                f"nothing to check: give a threshold ({named}), --require, or --baseline with "
                "--max-drop"
            )

    def requirements(self) -> list[Requirement]:
        """The named thresholds in use, then each --require."""
        named = [
            Requirement(path, op, False if value is True else value, _flag(name), roles)
            for name, (path, op, roles) in NAMED.items()
            if (value := getattr(self, name)) is not None and value is not False
        ]
        return named + [Requirement.parse(text) for text in self.require]


@dataclass(frozen=True)
class Check:
    """One comparison and its outcome."""

    dataset: str | None  # the gated dataset (first in the path); None: the report as a whole
    field: str  # the rest of the path ("gain", "0.max_sharpness", "layers.3.collapse")
    op: str  # one of OPS, or "drop<=" against a baseline
    threshold: float | bool | None
    value: Any  # as stored in the report (None: missing or null)
    passed: bool
    message: str
    subject: str = ""  # as --fail-on names it: DATASET, or LAYER/DATASET (not in the verdict)


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True when there is at least one check and every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        checks = [{k: v for k, v in asdict(c).items() if k != "subject"} for c in self.checks]
        return {"passed": self.passed, "checks": checks}


def run_checks(
    report: Mapping[str, Any],
    gates: Gates,
    baseline: Mapping[str, Any] | None = None,
    *,
    report_name: str = "the report",
    baseline_name: str = "the baseline",
) -> Verdict:
    """Test ``gates`` on a report (as :func:`clipsharp.reports.report.read_report` reads it);
    ``baseline`` is the document at ``gates.baseline`` (None without one), and the names are
    how messages name the two. One :class:`Check` per path tested.

    Example:
        >>> run_checks(read_report("path.json"), Gates(min_gain=0.0)).passed
    """
    if (baseline is None) != (gates.max_drop is None):
        raise ConfigError(TOGETHER)
    summary = report.get("summary")
    if not isinstance(summary, dict) or not summary:
        message = f"{report_name} has an empty summary: the analysis measured nothing"
        return Verdict((Check(None, "summary", "", None, None, False, message),))
    checks = [
        check
        for requirement in gates.requirements()
        for check in _checks(report, requirement, gates.datasets, report_name)
    ]
    if baseline is not None and gates.max_drop is not None:
        names = (report_name, baseline_name)
        checks += _baseline_checks(report, baseline, gates, names)
    return Verdict(tuple(checks))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- requirements


def _checks(
    report: Mapping[str, Any], req: Requirement, chosen: tuple[str, ...] | None, report_name: str
) -> list[Check]:
    """One check per path the requirement reaches, EACH standing for each gated dataset."""
    summary = report["summary"]
    if EACH not in req.path:
        return [_compare(summary, path, value, req, 0) for path, value in lookup(summary, req.path)]
    at = req.path.index(EACH)
    roles = req.roles
    names = chosen or [
        str(d["name"]) for d in _datasets(report) if not roles or d.get("role") in roles
    ]
    if not names:
        which = f"{'/'.join(roles)} dataset" if roles else "dataset"
        field = ".".join(p for p in req.path if p != EACH)
        message = (
            f"{req.name}: {report_name} has no {which} to gate; "
            "name the datasets to gate with --datasets"
        )
        return [Check(None, field, req.op, req.threshold, None, False, message)]
    return [
        _compare(summary, path, value, req, at)
        for name in names
        for path, value in lookup(summary, (*req.path[:at], name, *req.path[at + 1 :]))
    ]


def _datasets(report: Mapping[str, Any]) -> list[dict]:
    """The report's ``inputs.datasets`` entries (name, role, fingerprint)."""
    datasets = (report.get("inputs") or {}).get("datasets") or []
    return [d for d in datasets if isinstance(d, dict) and "name" in d]


@dataclass(frozen=True)
class Missing:
    """A path that is not in the report; ``keys`` are those found where it stopped."""

    keys: tuple[str, ...]


def lookup(
    node: Any, segments: tuple[str, ...], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every ``(path, value)`` a path reaches: ``*`` matches every key or element (but a layer
    marked ``unchanged``, not evaluated), and a name applied to a list applies to each of its
    elements. A path that leads nowhere yields its value as :class:`Missing`.
    """
    if not segments:
        yield path, node
        return
    head, rest = segments[0], segments[1:]
    children = _children(node)
    if head == "*":
        chosen = {k: v for k, v in children.items() if _children(v).get("unchanged") is not True}
        if not chosen:
            yield (*path, "*", *rest), Missing(())
        for key, child in chosen.items():
            yield from lookup(child, rest, (*path, key))
    elif head in children:
        yield from lookup(children[head], rest, (*path, head))
    elif isinstance(node, list) and node:  # a field of a list: of each element (one per rho)
        for index, child in enumerate(node):
            yield from lookup(child, segments, (*path, str(index)))
    else:
        yield (*path, head, *rest), Missing(tuple(children))


def _children(node: Any) -> dict[str, Any]:
    if isinstance(node, dict):
        return {str(k): v for k, v in node.items()}
    if isinstance(node, list):
        return {str(i): v for i, v in enumerate(node)}
    return {}


def _compare(
    summary: Mapping[str, Any], path: tuple[str, ...], value: Any, req: Requirement, at: int
) -> Check:
    """The check of ``value`` found at ``path``, whose dataset is ``path[at]``."""
    dataset, field = path[at], ".".join(path[:at] + path[at + 1 :])
    row = _row(summary, path)
    rho, layer = row.get("rho"), row.get("layer")
    where = "summary." + ".".join(path)
    where += f" (rho {rho:g})" if isinstance(rho, int | float) else ""
    where += f" (layer {layer})" if isinstance(layer, str) else ""
    subject = f"{layer}/{dataset}" if isinstance(layer, str) else dataset
    op, threshold = req.op, req.threshold
    wanted = f"{op} {show_value(threshold)}"

    def check(passed: bool, message: str, shown: Any = None) -> Check:
        return Check(dataset, field, op, threshold, shown, passed, message, subject)

    if isinstance(value, Missing):
        has = f" (found: {', '.join(value.keys[:8])})" if value.keys else ""
        return check(False, f"{where} is missing{has}, needs {wanted}")
    if value is None:
        return check(False, f"{where} is null, needs {wanted}")
    if isinstance(threshold, bool) != isinstance(value, bool) or not isinstance(value, int | float):
        kind = "true / false" if isinstance(threshold, bool) else "a number"
        return check(False, f"{where} = {show_value(value)} is not {kind}, needs {wanted}", value)
    passed = passes(value, op, threshold)
    near = f"{where} = {show_value(value, near=threshold)}"
    return check(passed, near + (f" {wanted}" if passed else f", needs {wanted}"), value)


def _row(summary: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The per-rho entry (sharpness) or per-layer row (layerwise) the path goes through."""
    node: Any = summary
    for key in path:
        node = _children(node).get(key)
        if isinstance(node, dict) and ("rho" in node or "layer" in node):
            return node
    return {}


def show_value(value: Any, near: Any = None) -> str:
    """A value as JSON writes it: true / false / null; floats to 4 significant digits, or
    as many more as tell them apart from ``near`` (the threshold they are compared with)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if not isinstance(value, float):
        return str(value)
    comparable = isinstance(near, int | float) and not isinstance(near, bool) and near != value
    for digits in range(4, 17):
        text = f"{value:.{digits}g}"
        text += "" if any(c in text for c in ".en") else ".0"  # 0.0 stays a float, as in JSON
        if not comparable or float(text) != float(f"{near:.{digits}g}"):
            return text
    return repr(value)


# ----------------------------------------------------------------------------- baseline


def _baseline_checks(
    report: Mapping[str, Any], baseline: Mapping[str, Any], gates: Gates, names: tuple[str, str]
) -> list[Check]:
    """Per dataset of the baseline and field of BASELINE_FIELDS: the drop, at most the allowed."""
    (report_name, baseline_name), command = names, report.get("command")
    if command != baseline.get("command"):
        raise ConfigError(
            f"{baseline_name} is a {baseline.get('command')} report and {report_name} a "
            f"{command} report; compare reports of the same command"
        )
    if command not in BASELINE_FIELDS:
        raise ConfigError(
            f"--baseline compares {', '.join(BASELINE_FIELDS)} reports, not {command} reports"
        )
    old_summary, summary = _children(baseline.get("summary")), report["summary"]
    datasets = [n for n in old_summary if gates.datasets is None or n in gates.datasets]
    if not datasets:
        message = f"{baseline_name} has no dataset to compare with"
        return [Check(None, "summary", "drop<=", None, None, False, message)]
    new_print, old_print = (
        {d["name"]: d.get("fingerprint") for d in _datasets(r)} for r in (report, baseline)
    )
    checks = []
    for name in datasets:
        if name not in summary:
            message = f"dataset {name} of {baseline_name} is missing from {report_name}"
            checks.append(Check(name, "", "drop<=", None, None, False, message))
            continue
        moved = name in old_print and new_print.get(name, old_print[name]) != old_print[name]
        note = " (the dataset differs from the baseline's)" if moved else ""
        for field in BASELINE_FIELDS[command]:
            old, new = _children(old_summary[name]).get(field), _children(summary[name]).get(field)
            checks.append(_drop_check(name, field, old, new, gates.max_drop, names, note))
    return checks


def _drop_check(
    name: str, field: str, old: Any, new: Any, max_drop: str, names: tuple[str, str], note: str
) -> Check:
    for value, where in ((old, names[1]), (new, names[0])):
        if not isinstance(value, int | float) or isinstance(value, bool):
            message = f"{name}.{field} in {where} is {show_value(value)}, not a number"
            return Check(name, field, "drop<=", None, None, False, message)
    drop, allowed = old - new, allowed_drop(max_drop, old)
    passed = passes(drop, "<=", allowed)
    message = (
        f"{name}.{field}: {show_value(old)} in {names[1]} -> {show_value(new, near=old)}: "
        f"drop {show_value(drop, near=allowed)} {'<=' if passed else '>'} "
        f"{show_value(allowed)} (--max-drop {max_drop.strip()}){note}"
    )
    return Check(name, field, "drop<=", allowed, drop, passed, message)


def tripped(report: Mapping[str, Any], condition: str) -> list[str]:
    """What trips ``--fail-on CONDITION`` of interpolate / layerwise: the subjects (DATASET,
    LAYER/DATASET) whose value fails check's ``--no-failure-mode`` / ``--no-collapse``; what
    has nothing to judge (no OOD set, every layer unchanged) trips nothing."""
    conditions = {"failure-mode": "no_failure_mode", "collapse": "no_collapse"}
    verdict = run_checks(report, Gates(**{conditions[condition]: True}))
    return [c.subject for c in verdict.failures if c.value is not None]

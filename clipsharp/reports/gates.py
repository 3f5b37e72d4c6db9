"""``check``: a CI gate on a report — thresholds on its summary, drops against a baseline.

Which datasets a named threshold gates (``docs/ci.md``):

- ``--min-gain`` and ``--no-failure-mode``: the OOD datasets (``inputs.datasets[].role``);
- ``--max-depth``, ``--max-barrier``, ``--max-sharpness``: every dataset;
- ``Gates.datasets`` (``--datasets``): exactly these, for every named threshold.

Fail closed: a field that is missing, null or not a number, an empty summary, or no
dataset for a threshold to gate is a failed check, named. Thresholds compare the
stored float exactly (``--min-gain 0.01`` passes at gain == 0.01). Drops against a
baseline are computed exactly on the decimal values as the reports store them.
Malformed gates (a bad ``--require``, nothing to check) raise :class:`ConfigError`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import ConfigError

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Threshold:
    """What a named threshold option reads and how it compares: ``value OP threshold`` passes."""

    option: str  # the command-line flag, for messages
    field: str  # path inside summary.<dataset> (of each element when it is a list)
    op: str  # a key of OPS
    roles: tuple[str, ...] | None  # dataset roles gated by default; None: every dataset
    fixed: bool | None = None  # a flag's own threshold (--no-failure-mode: failure_mode == false)


THRESHOLDS: dict[str, Threshold] = {  # Gates field -> what it checks
    "min_gain": Threshold("--min-gain", "gain", ">=", ("ood",)),
    "max_depth": Threshold("--max-depth", "depth", "<=", None),
    "max_barrier": Threshold("--max-barrier", "barrier", "<=", None),
    "max_sharpness": Threshold("--max-sharpness", "max_sharpness", "<=", None),
    "no_failure_mode": Threshold("--no-failure-mode", "failure_mode", "==", ("ood",), fixed=False),
}
BASELINE_FIELDS = {"interpolate": ("best_accuracy", "gain")}  # command -> fields, higher is better
_REQUIRE = re.compile(r"^\s*([^\s<>=]+)\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Requirement:
    """``--require FIELD<OP>VALUE``: FIELD is a dotted path in ``summary``; ``*`` matches all."""

    field: str  # "shifted.gain", "*.gain", "shifted.0.max_sharpness"
    op: str  # a key of OPS
    value: float | bool  # true / false only with ==
    text: str  # as written

    @classmethod
    def parse(cls, text: str) -> Requirement:
        match = _REQUIRE.match(text)
        if not match:
            raise ConfigError(
                f"--require {text!r} is not FIELD<OP>VALUE; write e.g. 'shifted.gain>=0.02' "
                f"(OP: {', '.join(OPS)})"
            )
        field, op, raw = match.groups()
        if any(not part for part in field.split(".")):
            raise ConfigError(f"--require {text!r}: {field!r} has an empty part; write a.b.c")
        if raw in ("true", "false"):
            if op != "==":
                raise ConfigError(f"--require {text!r}: true / false compare only with ==")
            return cls(field, op, raw == "true", text)
        return cls(field, op, _finite_number(raw, f"--require {text!r}"), text)


@dataclass(frozen=True)
class MaxDrop:
    """``--max-drop X`` (absolute, in the field's units) or ``X%`` (of the baseline's |value|)."""

    amount: Decimal  # >= 0; a percentage when relative
    relative: bool
    text: str  # as written

    @classmethod
    def parse(cls, text: str) -> MaxDrop:
        relative = text.strip().endswith("%")
        number = text.strip().removesuffix("%")
        try:
            amount = Decimal(number)
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0:
            raise ConfigError(f"--max-drop {text!r} is not a non-negative number; write 0.01 or 1%")
        return cls(amount, relative, text.strip())

    def allows(self, old: Decimal, drop: Decimal) -> tuple[bool, Decimal]:
        """Whether ``drop`` from ``old`` is allowed, and the largest allowed drop (exact)."""
        if self.relative:
            return drop * 100 <= self.amount * abs(old), self.amount * abs(old) / 100
        return drop <= self.amount, self.amount


@dataclass(frozen=True)
class Gates:
    """Everything ``check`` tests; a None / False field is not tested."""

    min_gain: float | None = None  # gain >= this (OOD datasets)
    max_depth: float | None = None  # depth <= this (every dataset)
    max_barrier: float | None = None  # barrier <= this (every dataset)
    max_sharpness: float | None = None  # every rho's max_sharpness <= this (every dataset)
    no_failure_mode: bool = False  # failure_mode == false (OOD datasets)
    requires: tuple[Requirement, ...] = ()  # --require, each on its own paths
    datasets: tuple[str, ...] | None = None  # gate exactly these datasets; None: by role
    max_drop: MaxDrop | None = None  # largest drop of BASELINE_FIELDS against a baseline

    def __post_init__(self) -> None:
        for name, spec in THRESHOLDS.items():
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{spec.option} {value} is not a finite number")
        if not (self.named() or self.requires or self.max_drop):
            raise ConfigError(
                "nothing to check: give a threshold (--min-gain, --max-depth, --max-barrier, "
                "--max-sharpness, --no-failure-mode), --require, or --baseline with --max-drop"
            )

    def named(self) -> list[tuple[Threshold, float | bool]]:
        """The named thresholds in use, with the threshold each compares against."""
        used = []
        for name, spec in THRESHOLDS.items():
            value = getattr(self, name)
            if value is None or value is False:
                continue
            used.append((spec, spec.fixed if spec.fixed is not None else value))
        return used


@dataclass(frozen=True)
class Check:
    """One comparison and its outcome."""

    dataset: str | None  # the first part of the path in summary; None: the report as a whole
    field: str  # the rest of the path ("gain", "0.max_sharpness")
    op: str  # a key of OPS, or "drop<=" against a baseline
    threshold: float | bool | None
    value: Any  # as stored in the report (None: missing or null)
    passed: bool
    message: str


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
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def baseline_max_drop(baseline: object | None, max_drop: str | None) -> MaxDrop | None:
    """The parsed ``--max-drop``; it and ``--baseline`` go together, or neither is given."""
    if (baseline is None) != (max_drop is None):
        raise ConfigError("--baseline and --max-drop go together: give both or neither")
    return MaxDrop.parse(max_drop) if max_drop else None


def run_checks(
    report: Mapping[str, Any],
    gates: Gates,
    baseline: Mapping[str, Any] | None = None,
    *,
    report_name: str = "the report",
    baseline_name: str = "the baseline",
) -> Verdict:
    """Test ``gates`` on a report (as read by :func:`clipsharp.reports.report.read_report`).

    Args:
        report: the report document.
        gates: the thresholds; ``gates.max_drop`` needs ``baseline`` and the reverse.
        baseline: an earlier report of the same command, or None.
        report_name, baseline_name: how messages name the two (their file names).

    Returns:
        The :class:`Verdict`: one :class:`Check` per dataset and field tested.

    Example:
        >>> run_checks(read_report("path.json"), Gates(min_gain=0.0)).passed
    """
    if (baseline is None) != (gates.max_drop is None):
        raise ConfigError("--baseline and --max-drop go together: give both or neither")
    summary = report.get("summary")
    if not isinstance(summary, dict) or not summary:
        message = f"{report_name} has an empty summary: the analysis measured nothing"
        return Verdict((Check(None, "summary", "", None, None, False, message),))
    checks: list[Check] = []
    for spec, threshold in gates.named():
        checks += _threshold_checks(report, spec, threshold, gates.datasets, report_name)
    for requirement in gates.requires:
        for path, value in lookup(summary, requirement.field.split("."), gates.datasets):
            checks.append(_compare(summary, path, value, requirement.op, requirement.value))
    if baseline is not None and gates.max_drop is not None:
        names = (report_name, baseline_name)
        checks += _baseline_checks(report, baseline, gates.max_drop, gates.datasets, names)
    return Verdict(tuple(checks))


# ----------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Missing:
    """A path that is not in the report; ``keys`` are those found where it stopped."""

    keys: tuple[str, ...]


def lookup(
    node: Any, segments: Sequence[str], first: Sequence[str] | None = None, path: tuple = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every ``(path, value)`` a dotted path reaches; ``*`` matches every key or element,
    and a name applied to a list applies to each of its elements.

    ``first`` restricts what ``*`` matches at the top level (the gated datasets).
    A path that leads nowhere yields its value as :class:`Missing`.
    """
    if not segments:
        yield path, node
        return
    head, rest = segments[0], segments[1:]
    children = _children(node)
    if head == "*":
        chosen = list(children)
        if not path and first is not None:
            chosen = [key for key in chosen if key in first]
        if not chosen:
            yield (*path, "*", *rest), Missing(tuple(children))
        for key in chosen:
            yield from lookup(children[key], rest, first, (*path, key))
    elif head in children:
        yield from lookup(children[head], rest, first, (*path, head))
    elif isinstance(node, list) and node:  # a field of a list: of each element (one per rho)
        for index, child in enumerate(node):
            yield from lookup(child, segments, first, (*path, str(index)))
    else:
        yield (*path, head, *rest), Missing(tuple(children))


def _children(node: Any) -> dict[str, Any]:
    if isinstance(node, dict):
        return {str(k): v for k, v in node.items()}
    if isinstance(node, list):
        return {str(i): v for i, v in enumerate(node)}
    return {}


def _threshold_checks(
    report: Mapping[str, Any],
    spec: Threshold,
    threshold: float | bool,
    chosen: Sequence[str] | None,
    report_name: str,
) -> list[Check]:
    names = gated_datasets(report, spec.roles, chosen)
    if not names:
        which = "dataset" if spec.roles is None else f"{'/'.join(spec.roles)} dataset"
        message = (
            f"{spec.option}: {report_name} has no {which} to gate; "
            "name the datasets to gate with --datasets"
        )
        return [Check(None, spec.field, spec.op, threshold, None, False, message)]
    summary = report["summary"]
    return [
        _compare(summary, path, value, spec.op, threshold)
        for name in names
        for path, value in lookup(summary, [name, *spec.field.split(".")])
    ]


def gated_datasets(
    report: Mapping[str, Any], roles: tuple[str, ...] | None, chosen: Sequence[str] | None
) -> list[str]:
    """``chosen`` when given, else the report's datasets of these roles (None: all), in order."""
    if chosen is not None:
        return list(chosen)
    datasets = (report.get("inputs") or {}).get("datasets") or []
    return [
        str(d["name"])
        for d in datasets
        if isinstance(d, dict) and "name" in d and (roles is None or d.get("role") in roles)
    ]


def _compare(
    summary: Mapping[str, Any], path: tuple[str, ...], value: Any, op: str, threshold: float | bool
) -> Check:
    dataset, field = path[0], ".".join(path[1:])
    where = "summary." + ".".join(path) + _context(summary, path)
    wanted = f"{op} {show_value(threshold)}"

    def failed(message: str, shown: Any = None) -> Check:
        return Check(dataset, field, op, threshold, shown, False, message)

    if isinstance(value, Missing):
        has = f" (found: {', '.join(value.keys[:8])})" if value.keys else ""
        return failed(f"{where} is missing{has}, needs {wanted}")
    if value is None:
        return failed(f"{where} is null, needs {wanted}")
    if isinstance(threshold, bool) != isinstance(value, bool) or not isinstance(value, int | float):
        kind = "true / false" if isinstance(threshold, bool) else "a number"
        return failed(f"{where} = {show_value(value)} is not {kind}, needs {wanted}", value)
    passed = OPS[op](value, threshold)
    near = f"{where} = {show_value(value, near=threshold)}"
    shown = near + (f" {wanted}" if passed else f", needs {wanted}")
    return Check(dataset, field, op, threshold, value, passed, shown)


def _context(summary: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """`` (rho 0.1)`` when the path goes through a per-rho entry of a sharpness summary."""
    node: Any = summary
    for key in path:
        node = _children(node).get(key)
        if isinstance(node, dict) and isinstance(node.get("rho"), int | float):
            return f" (rho {node['rho']:g})"
    return ""


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


def _finite_number(text: str, where: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {text!r} is not a finite number (or true / false)")
    return number


# ----------------------------------------------------------------------------- baseline


def _baseline_checks(
    report: Mapping[str, Any],
    baseline: Mapping[str, Any],
    max_drop: MaxDrop,
    chosen: Sequence[str] | None,
    names: tuple[str, str],
) -> list[Check]:
    report_name, baseline_name = names
    command, old_command = report.get("command"), baseline.get("command")
    if command != old_command:
        raise ConfigError(
            f"{baseline_name} is a {old_command} report and {report_name} a {command} report; "
            "compare reports of the same command"
        )
    if command not in BASELINE_FIELDS:
        raise ConfigError(
            f"--baseline compares {', '.join(BASELINE_FIELDS)} reports, not {command} reports"
        )
    old_summary, summary = _children(baseline.get("summary")), report["summary"]
    datasets = [n for n in old_summary if chosen is None or n in chosen]
    if not datasets:
        message = f"{baseline_name} has no dataset to compare with"
        return [Check(None, "summary", "drop<=", None, None, False, message)]
    moved = _changed_fingerprints(report, baseline)
    checks = []
    for name in datasets:
        if name not in summary:
            message = f"dataset {name} of {baseline_name} is missing from {report_name}"
            checks.append(Check(name, "", "drop<=", None, None, False, message))
            continue
        for field in BASELINE_FIELDS[command]:
            note = " (the dataset differs from the baseline's)" if name in moved else ""
            old, new = _children(old_summary[name]).get(field), _children(summary[name]).get(field)
            checks.append(_drop_check(name, field, old, new, max_drop, names, note))
    return checks


def _drop_check(
    name: str,
    field: str,
    old: Any,
    new: Any,
    max_drop: MaxDrop,
    names: tuple[str, str],
    note: str,
) -> Check:
    """Passes when ``old - new`` is at most the allowed drop, computed in exact decimals."""
    for value, where in ((old, names[1]), (new, names[0])):
        if not isinstance(value, int | float) or isinstance(value, bool):
            message = f"{name}.{field} in {where} is {show_value(value)}, not a number"
            return Check(name, field, "drop<=", None, None, False, message)
    drop = Decimal(repr(old)) - Decimal(repr(new))
    passed, allowed = max_drop.allows(Decimal(repr(old)), drop)
    verb = "<=" if passed else ">"
    message = (
        f"{name}.{field}: {show_value(old)} in {names[1]} -> {show_value(new, near=old)}: "
        f"drop {show_value(float(drop), near=float(allowed))} {verb} "
        f"{allowed} (--max-drop {max_drop.text}){note}"
    )
    return Check(name, field, "drop<=", float(allowed), float(drop), passed, message)


def _changed_fingerprints(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> set[str]:
    def prints(doc: Mapping[str, Any]) -> dict[str, Any]:
        datasets = (doc.get("inputs") or {}).get("datasets") or []
        return {d.get("name"): d.get("fingerprint") for d in datasets if isinstance(d, dict)}

    new, old = prints(report), prints(baseline)
    return {name for name in new.keys() & old.keys() if new[name] != old[name]}


def tripped(summary: dict, condition: str) -> list[str]:
    """What trips a ``--fail-on`` gate: OOD datasets in failure mode, or collapsed layers.

    ``condition`` is ``failure-mode`` (an ``interpolate`` summary) or ``collapse`` (a
    ``layerwise`` summary, reported as ``layer/dataset``).
    """
    if condition == "failure-mode":
        return [name for name, s in summary.items() if s.get("failure_mode") is True]
    if condition == "collapse":
        return [
            f"{row['layer']}/{name}"
            for row in summary.get("layers", [])
            for name, s in row.items()
            if isinstance(s, dict) and s.get("collapse") is True
        ]
    raise ValueError(f"unknown --fail-on condition {condition!r}")

"""Reports: the JSON contract shared by every command (schema ``clipsharp.report/1``).

``docs/reports.md`` documents every field. A report is written atomically;
apart from ``created`` and ``timing`` it depends only on the inputs and options.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ReportError
from ..files import write_atomic

SCHEMA = "clipsharp.report/1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Report:
    command: str  # the clipsharp command that made it
    inputs: dict[str, Any]  # checkpoints and datasets, with sha256 / fingerprints
    config: dict[str, Any]  # every option that affects the numbers
    results: dict[str, Any]  # the measurements, point by point
    summary: dict[str, Any]  # what the measurements say, per dataset
    seconds: float = 0.0  # wall-clock time of the run
    created: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "command": self.command,
            "clipsharp_version": __version__,
            "created": self.created,
            "inputs": self.inputs,
            "config": self.config,
            "results": self.results,
            "summary": self.summary,
            "timing": {"seconds": round(self.seconds, 3)},
        }

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> None:
        """Write to exactly ``path``, atomically (temporary file + rename)."""
        text = self.to_json()
        write_atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_report(
    path: str | Path, command: str | None = None, *, complete: bool = False
) -> dict[str, Any]:
    """Load a report, refusing files that are not clipsharp reports of this schema.

    Args:
        path: the JSON file.
        command: the command the report must come from (``"layerwise"``); None: any.
        complete: also check every field that figures, ``study`` and ``stragglers --by
            barrier`` read (:data:`FIELDS` of the report's command), with its type.

    Returns:
        The report as a dict; its sections (``inputs``, ``config``, ``results``,
        ``summary``) are objects where present, ``inputs.datasets`` a list of
        ``{"name", "role"}`` objects.

    Raises:
        ReportError: naming the file and the first field at fault.

    Example:
        >>> depths = read_report("layers.json", "layerwise", complete=True)["summary"]["layers"]
    """
    path = Path(path)
    doc = _load(path)
    if not isinstance(doc, dict):
        raise ReportError(
            f"{path} holds a JSON {type(doc).__name__.replace('dict', 'object')}, not a clipsharp "
            "report (a JSON object with a schema field); give a report a clipsharp command wrote"
        )
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise ReportError(
            f"report {path} has schema {schema!r}, this clipsharp reads {SCHEMA!r}; "
            "re-run the analysis with this version"
        )
    _check(doc, COMMON, "", [], path)
    if command is not None and doc["command"] != command:
        raise ReportError(f"{path} is a {doc['command']!r} report; give a {command} report")
    if complete and doc["command"] in FIELDS:
        names = [d["name"] for d in doc.get("inputs", {}).get("datasets", [])]
        _check(doc, FIELDS[doc["command"]], "", names, path)
    return doc


MAX_BYTES = 64 * 2**20  # the largest report read; a real one is a few MB at most
MAX_DEPTH = 32  # the deepest nesting read; the deepest a report goes is 8 (layerwise)


def _load(path: Path) -> Any:
    """The JSON of ``path``, refused when over :data:`MAX_BYTES` (before reading it whole) or
    nested deeper than :data:`MAX_DEPTH`."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as e:
        raise ReportError(f"report {path} does not exist") from e
    except IsADirectoryError as e:
        raise ReportError(f"report {path} is a folder; give the JSON file") from e
    except OSError as e:
        raise ReportError(f"report {path} cannot be read ({e.strerror}); check the path") from e
    if len(data) > MAX_BYTES:
        raise ReportError(
            f"report {path} is over {MAX_BYTES // 2**20} MiB, larger than any clipsharp "
            "report; give a report a clipsharp command wrote"
        )
    try:
        doc = json.loads(data.decode("utf-8"))
        deep = _depth(doc) > MAX_DEPTH
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(
            f"report {path} is not valid JSON ({e}); is it a clipsharp report?"
        ) from e
    except RecursionError:  # nested past what the parser follows
        deep = True
    if deep:
        raise ReportError(
            f"report {path} is nested more than {MAX_DEPTH} levels deep, deeper than any "
            "clipsharp report; give a report a clipsharp command wrote"
        )
    return doc


def _depth(doc: Any) -> int:
    """How many objects and lists deep ``doc`` goes (counted without recursion)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:  # deeper is refused anyway
                stack.extend((item, level + 1) for item in value)
    return deepest


@dataclass(frozen=True)
class Kind:
    """What a leaf field must be."""

    what: str  # for messages: "a number"
    test: Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


NUMBER = Kind("a number", _is_number)
NUMBER_OR_NULL = Kind("a number or null", lambda v: v is None or _is_number(v))
TEXT = Kind("a string", lambda v: isinstance(v, str))
FLAG = Kind("true or false", lambda v: isinstance(v, bool))
FLAG_OR_NULL = Kind("true, false or null", lambda v: v is None or isinstance(v, bool))
ROLE = Kind('"id" or "ood"', lambda v: v in ("id", "ood"))
ANY = Kind("anything", lambda v: True)
EACH = "<dataset>"  # a key standing for every dataset name of inputs.datasets
# A spec: a Kind; [spec] for a list of them; {key: spec} for an object ("?key": optional);
# or a function(value, where, names, source) for what depends on other fields.

COMMON = {
    "command": TEXT,
    "?inputs": {"?datasets": [{"name": TEXT, "role": ROLE}], "?checkpoints": {}},
    "?config": {},
    "?results": {},
    "?summary": {},
}
CHECKPOINT = {"path": TEXT, "sha256": TEXT}
PAIR = {"zero_shot": CHECKPOINT, "fine_tuned": CHECKPOINT}
ANY_CHECKPOINTS = {"?zero_shot": CHECKPOINT, "?fine_tuned": CHECKPOINT, "?model": CHECKPOINT}
POINT = {
    "alpha": NUMBER,
    "metrics": {EACH: {"accuracy": NUMBER_OR_NULL, "loss": NUMBER_OR_NULL}},
}
PATH_FIELDS = ("best_alpha", "best_accuracy", "gain", "gain_over_endpoints", "depth", "barrier")
PATH_SUMMARY = {EACH: {f: NUMBER_OR_NULL for f in PATH_FIELDS} | {"failure_mode": FLAG_OR_NULL}}
LAYER_SUMMARY = {"gain": NUMBER_OR_NULL, "depth": NUMBER_OR_NULL, "barrier": NUMBER_OR_NULL}


def _changed_layer(extra: dict) -> Callable:
    """A layer entry: ``layer`` and ``unchanged``; the ``extra`` fields when it changed."""

    def check(row: Any, where: str, names: list[str], source: Path) -> None:
        _check(row, {"layer": TEXT, "unchanged": FLAG}, where, names, source)
        if not row["unchanged"]:
            _check(row, extra, where, names, source)

    return check


def _ranked_layer(row: Any, where: str, names: list[str], source: Path) -> None:
    """A stragglers entry: its layer and the value ranked (sharpness, or depth)."""
    values = {
        "?sharpness": NUMBER_OR_NULL,
        "?depth": NUMBER_OR_NULL,
        "?stderr": NUMBER_OR_NULL,
        "?zero_shot_sharpness": NUMBER_OR_NULL,
    }
    _check(row, {"layer": TEXT, **values}, where, names, source)
    if "sharpness" not in row and "depth" not in row:
        raise ReportError(f"report {source}: {where} has neither sharpness nor depth; {RERUN}")


FIELDS: dict[str, dict] = {  # command -> the fields its readers rely on
    "interpolate": {
        "inputs": {"datasets": [ANY], "checkpoints": PAIR},
        "results": {"path": [POINT]},
        "summary": PATH_SUMMARY,
    },
    "layerwise": {
        "inputs": {"datasets": [ANY], "checkpoints": PAIR},
        "config": {"?background": TEXT},
        "results": {"layers": [_changed_layer({"path": [POINT]})]},
        "summary": {"layers": [_changed_layer({EACH: LAYER_SUMMARY})]},
    },
    "sharpness": {
        "inputs": {"datasets": [ANY], "checkpoints": ANY_CHECKPOINTS},
        "config": {"?kind": TEXT},
        "results": {
            "points": [
                {
                    "rho": NUMBER,
                    "?alpha": NUMBER_OR_NULL,
                    "metrics": {EACH: {"sharpness": NUMBER_OR_NULL, "stderr": NUMBER_OR_NULL}},
                }
            ]
        },
        "summary": {
            EACH: [{"rho": NUMBER, "max_sharpness": NUMBER_OR_NULL, "?fine_tuned": NUMBER_OR_NULL}]
        },
    },
    "stragglers": {
        "inputs": {"?datasets": [ANY], "?checkpoints": ANY_CHECKPOINTS},
        "results": {"layers": [_ranked_layer]},
        "summary": {"stragglers": [ANY], "?rule": TEXT},
    },
    "prune": {
        "inputs": {"?datasets": [ANY], "checkpoints": {"fine_tuned": CHECKPOINT}},
        "results": {"tensors": [ANY], "?before": [POINT], "?after": [POINT]},
        "summary": {"layers": [TEXT]},
    },
}
RERUN = "re-run the command that made it"


def _check(value: Any, spec: Any, where: str, names: list[str], source: Path) -> None:
    """Raise a ReportError naming ``source`` and the field where ``value`` breaks ``spec``."""
    if isinstance(spec, Kind):
        if not spec.test(value):
            raise _wrong(source, where, value, spec.what)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise _wrong(source, where, value, "a list")
        for i, item in enumerate(value):
            _check(item, spec[0], f"{where}[{i}]", names, source)
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _wrong(source, where, value, "an object")
        for key, inner in spec.items():
            optional, key = key.startswith("?"), key.removeprefix("?")
            for name in names if key == EACH else [key]:
                field = f"{where}.{name}" if where else name
                if name in value:
                    _check(value[name], inner, field, names, source)
                elif not optional:
                    raise ReportError(f"report {source}: {field} is missing; {RERUN}")
    else:
        spec(value, where, names, source)


def _wrong(source: Path, where: str, value: Any, what: str) -> ReportError:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return ReportError(f"report {source}: {where} is {shown}, not {what}; {RERUN}")

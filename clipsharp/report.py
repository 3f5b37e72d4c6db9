"""Reports: the JSON contract shared by every command (schema ``clipsharp.report/1``).

``docs/reports.md`` documents every field. A report is written atomically;
apart from ``created`` and ``timing`` it depends only on the inputs and options.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ReportError
from .files import write_atomic

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


def read_report(path: str | Path) -> dict[str, Any]:
    """Load a report, refusing files that are not clipsharp reports of this schema."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ReportError(f"report {path} does not exist") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(
            f"report {path} is not valid JSON ({e}); is it a clipsharp report?"
        ) from e
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SCHEMA:
        raise ReportError(
            f"report {path} has schema {schema!r}, this clipsharp reads {SCHEMA!r}; "
            "re-run the analysis with this version"
        )
    return doc

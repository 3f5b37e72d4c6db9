"""A journal of finished points, written as a sweep goes, so ``--resume`` can continue it.

The journal lives beside the report (``REPORT.partial``), is rewritten
atomically after every point, and is removed once the report is written. It
records the run's identity (command, input sha256s and fingerprints, config):
a resumed run must have the same identity, otherwise it is refused, naming
what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import distributed
from .errors import ConfigError
from .evaluate import Metrics
from .files import write_atomic


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


class Journal:
    """Finished points by key (e.g. ``"0.3"``), each ``{dataset: Metrics}``."""

    def __init__(self, path: Path, identity: dict[str, Any], *, resume: bool) -> None:
        self.path = path
        self.identity = json.loads(json.dumps(identity))  # as it will read back
        self.points: dict[str, dict[str, Metrics]] = {}
        if resume and path.exists():
            self._load()

    def _load(self) -> None:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            identity, points = stored["identity"], stored["points"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"--resume: {self.path} is not a clipsharp journal ({e}); delete it to start afresh"
            ) from e
        differs = _differences(identity, self.identity)
        if differs:
            raise ConfigError(
                f"--resume: {self.path} was written by a run with other inputs or options "
                f"({', '.join(differs[:5])} differ); rerun without --resume to start afresh"
            )
        self.points = {
            key: {name: Metrics(*totals) for name, totals in metrics.items()}
            for key, metrics in points.items()
        }

    def get(self, key: str) -> dict[str, Metrics] | None:
        return self.points.get(key)

    def record(self, key: str, metrics: dict[str, Metrics]) -> None:
        self.points[key] = metrics
        if not distributed.is_main():
            return
        document = {
            "identity": self.identity,
            "points": {
                k: {name: [m.correct, m.loss_sum, m.count] for name, m in v.items()}
                for k, v in self.points.items()
            },
        }
        text = json.dumps(document)
        write_atomic(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def close(self) -> None:
        """The report is written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(old.keys() | new.keys()):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".") or "document"]

"""A journal of a run's progress, written as it goes, so ``--resume`` can continue it.

The journal lives beside the report (``REPORT.partial``; under torchrun one per rank,
``REPORT.partial.rankR``), is rewritten atomically at every block boundary, and is removed
once the report is written. It holds:

- the run's identity (command, input sha256s and fingerprints, config): a resumed run must
  have the same identity, otherwise it is refused, naming what differs;
- per pass of the engine: the point keys, the images done per dataset and the fp64 sums
  (correct, loss, count) of every point and dataset so far — a resumed pass continues from
  there with the same sums in the same order, so the report is the same bit for bit;
- finished results that are not engine sums (a worst-case ascent's outcome), by key.

A checksum over the content guards against a damaged or edited journal: such a journal,
or one whose sums are impossible, is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import journal_path, write_atomic
from . import distributed

__all__ = ["Journal", "journal_path"]


class Journal:
    """Passes of the engine and finished results, see the module docstring."""

    def __init__(self, path: Path, identity: dict[str, Any], *, resume: bool) -> None:
        if distributed.world_size() > 1:  # one journal per rank: each streams its own shard
            path = path.with_name(f"{path.name}.rank{distributed.rank()}")
        self.path = path
        self.identity = json.loads(json.dumps(identity))  # as it will read back
        self.passes: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {}
        if resume and path.exists():
            self._load()

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(
            f"--resume: {self.path} {why}; delete it, or rerun without --resume, to start afresh"
        )

    def _load(self) -> None:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            body, checksum = stored["body"], stored["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise self._refuse(f"is not a clipsharp journal ({type(e).__name__})") from e
        if not isinstance(body, dict) or checksum != _checksum(body):
            raise self._refuse("is damaged (its checksum does not match its content)")
        differs = _differences(body.get("identity"), self.identity)
        if differs:
            raise self._refuse(
                f"was written by a run with other inputs or options ({', '.join(differs[:5])} "
                "differ)"
            )
        passes, results = body.get("passes"), body.get("results")
        if not isinstance(passes, dict) or not isinstance(results, dict):
            raise self._refuse("is not a clipsharp journal (no passes or results)")
        for name, state in passes.items():
            why = _impossible(state)
            if why:
                raise self._refuse(f"holds impossible sums for {name!r} ({why})")
        self.passes, self.results = passes, results

    def get_pass(self, name: str) -> dict[str, Any] | None:
        """``{"points", "datasets", "done", "sums"}`` of a pass, as last saved."""
        return self.passes.get(name)

    def save_pass(self, name: str, points, datasets, done, sums) -> None:
        self.passes[name] = {
            "points": list(points),
            "datasets": list(datasets),
            "done": list(done),
            "sums": sums,
        }
        self._write()

    def get(self, key: str) -> Any:
        return self.results.get(key)

    def record(self, key: str, value: Any) -> None:
        self.results[key] = json.loads(json.dumps(value))
        self._write()

    def _write(self) -> None:
        body = {"identity": self.identity, "passes": self.passes, "results": self.results}
        text = json.dumps({"body": body, "sha256": _checksum(body)})
        write_atomic(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def close(self) -> None:
        """The report is written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def _checksum(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _impossible(state: Any) -> str | None:
    """Why a saved pass cannot be right, or None."""
    try:
        points, datasets, done, sums = (state[k] for k in ("points", "datasets", "done", "sums"))
        shape_ok = len(sums) == len(points) and len(done) == len(datasets)
        if not shape_ok or any(len(row) != len(datasets) for row in sums):
            return "their shape does not match the points and datasets"
        for row in sums:
            for correct, loss, count in row:
                values = (correct, loss, count)
                if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                    return "a sum is not a finite number"
                if count < 0 or loss < 0 or not 0 <= correct <= count:
                    return "a count or loss is negative, or more correct than counted"
        if any(not isinstance(n, int) or n < 0 for n in done):
            return "a count of images done is not a non-negative integer"
    except (KeyError, TypeError, ValueError):
        return "a field is missing or of the wrong type"
    return None


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON documents differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(old.keys() | new.keys()):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".") or "document"]

"""``study``: many fine-tuned checkpoints of one zero-shot model, read from their reports.

The paper's central claim, as a table: across fine-tuned checkpoints, how well
does each measure (sharpness, depth, barrier, ...) rank the OOD gain of robust
fine-tuning? Reports are grouped by the fine-tuned checkpoint's sha256; each
needs an ``interpolate`` report (the gain); ``sharpness``, ``layerwise`` and
``stragglers`` reports add measures. The result is Spearman's rank correlation
of every measure with the gain, per OOD set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ReportError
from .report import Report, read_report
from .summary import spearman

TARGET = "gain"  # the OOD gain of the interpolate summary: max_a acc(a) - acc(0)
USED = ("interpolate", "sharpness", "layerwise", "stragglers")


def _key(doc: dict, role: str) -> str | None:
    return doc.get("inputs", {}).get("checkpoints", {}).get(role, {}).get("sha256")


def group(docs: Sequence[dict], names: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``{fine_tuned sha256: {command: report}}``, refusing mixed zero-shot models."""
    zero_shots = {_key(d, "zero_shot") for d in docs if _key(d, "zero_shot")}
    if len(zero_shots) > 1:
        raise ReportError(
            "the reports are of different zero-shot checkpoints; a study compares fine-tunes "
            "of one zero-shot model"
        )
    groups: dict[str, dict[str, dict]] = {}
    for doc, name in zip(docs, names, strict=True):
        command = doc.get("command")
        if command not in USED:
            raise ReportError(f"{name} is a {command!r} report; a study reads {', '.join(USED)}")
        sha = _key(doc, "fine_tuned") or _key(doc, "model")
        if sha is None:
            raise ReportError(f"{name} names no fine-tuned checkpoint; is it complete?")
        if command in groups.setdefault(sha, {}):
            raise ReportError(f"{name}: a second {command} report of the same checkpoint")
        groups[sha][command] = doc
    return groups


def measures(reports: dict[str, dict]) -> dict[str, float]:
    """Every measure of one fine-tuned checkpoint, named ``measure[dataset]``."""
    found: dict[str, float] = {}
    for name, s in reports.get("interpolate", {}).get("summary", {}).items():
        for field in ("gain", "gain_over_endpoints", "depth", "barrier", "best_alpha"):
            found[f"{field}[{name}]"] = s[field]
    for name, rows in reports.get("sharpness", {}).get("summary", {}).items():
        for row in rows[:1]:  # the first rho
            found[f"sharpness@1[{name}]"] = row.get("fine_tuned")
            found[f"max_sharpness[{name}]"] = row["max_sharpness"]
    for row in reports.get("layerwise", {}).get("summary", {}).get("layers", []):
        for name, s in row.items():
            if isinstance(s, dict) and s["depth"] is not None:
                key = f"max_layer_depth[{name}]"
                found[key] = max(found.get(key, s["depth"]), s["depth"])
    stragglers = reports.get("stragglers")
    if stragglers:
        found["stragglers"] = len(stragglers["summary"]["stragglers"])
        values = [r.get("sharpness") for r in stragglers["results"]["layers"]]
        found["max_layer_sharpness"] = max((v for v in values if v is not None), default=None)
    return {name: value for name, value in found.items() if value is not None}  # null: unknown


def run_study(paths: Sequence[Path]) -> Report:
    """Spearman correlation of every measure with the OOD gain, across fine-tuned checkpoints."""
    started = time.perf_counter()
    docs = [read_report(p, complete=True) for p in paths]
    groups = group(docs, [str(p) for p in paths])
    missing = [sha for sha, reports in groups.items() if "interpolate" not in reports]
    if missing:
        raise ReportError(
            f"checkpoint {missing[0][:12]} has no interpolate report: the OOD gain comes from it"
        )
    rows = [_row(reports) for reports in groups.values()]
    ood = sorted({d["name"] for r in docs if r["command"] == "interpolate"
                  for d in r["inputs"]["datasets"] if d["role"] == "ood"})  # fmt: skip
    return Report(
        command="study",
        inputs={"reports": [str(p) for p in paths], "num_checkpoints": len(rows)},
        config={"target": TARGET, "ood": ood},
        results={"checkpoints": rows},
        summary={"correlations": {name: _correlations(rows, name) for name in ood}},
        seconds=time.perf_counter() - started,
    )


def _row(reports: dict[str, dict]) -> dict[str, Any]:
    interpolate = reports["interpolate"]
    checkpoint = interpolate["inputs"]["checkpoints"]["fine_tuned"]
    return {"fine_tuned": checkpoint["path"], "sha256": checkpoint["sha256"],
            "reports": sorted(reports), "measures": measures(reports)}  # fmt: skip


def _correlations(rows: list[dict], ood: str) -> dict[str, dict]:
    """Per measure: Spearman with the gain on ``ood``, over the checkpoints having both."""
    target = f"{TARGET}[{ood}]"
    names = sorted({m for r in rows for m in r["measures"]} - {target})
    result = {}
    for measure in names:
        pairs = [(r["measures"][measure], r["measures"][target]) for r in rows
                 if measure in r["measures"] and target in r["measures"]]  # fmt: skip
        value = spearman([p[0] for p in pairs], [p[1] for p in pairs])
        result[measure] = {"spearman": value, "checkpoints": len(pairs)}
    return result

"""``study``: many fine-tuned checkpoints of one zero-shot model, and how well each measure
ranks their OOD gain.

The paper's central claim, as a table: across fine-tuned checkpoints, how well does each
measure (sharpness, depth, barrier, stragglers, the size of the change, ...) rank the OOD
gain of robust fine-tuning? The measures of a checkpoint come from its reports
(``interpolate`` for the gain; ``sharpness``, ``layerwise`` and ``stragglers`` add
measures), either read from files (:func:`run_study`) or made by ``sweep.run_sweep``. Per
OOD set and measure: Spearman, Kendall tau-b, a bootstrap interval and a p-value
(``statistics.correlate``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ReportError
from ..options import StatisticsOptions
from .report import Report, read_report
from .statistics import correlate

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


def checkpoint_row(
    reports: dict[str, dict],
    files: Mapping[str, str],
    extra: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One fine-tuned checkpoint: its file, the reports behind it and its measures."""
    checkpoint = reports["interpolate"]["inputs"]["checkpoints"]["fine_tuned"]
    return {
        "name": Path(checkpoint["path"]).stem,
        "fine_tuned": checkpoint["path"],
        "sha256": checkpoint["sha256"],
        "reports": sorted(reports),
        "files": dict(files),
        "measures": measures(reports) | dict(extra or {}),
    }


def run_study(
    paths: Sequence[Path], statistics: StatisticsOptions | None = None, seed: int = 0
) -> Report:
    """The study of reports already written: grouped by fine-tuned checkpoint (sha256);
    ``seed`` seeds the resamples and the random pairings."""
    started = time.perf_counter()
    read = [(read_report(p, complete=True), p) for p in paths]
    skipped = [str(p) for doc, p in read if doc["command"] not in USED]  # prune, inspect...
    if len(skipped) == len(read):
        raise ReportError(f"none of the reports is one a study reads ({', '.join(USED)})")
    docs = [doc for doc, _ in read if doc["command"] in USED]
    paths = [p for doc, p in read if doc["command"] in USED]
    groups = group(docs, [str(p) for p in paths])
    missing = [sha for sha, reports in groups.items() if "interpolate" not in reports]
    if missing:
        raise ReportError(
            f"checkpoint {missing[0][:12]} has no interpolate report: the OOD gain comes from it"
        )
    files = {id(doc): str(p) for doc, p in zip(docs, paths, strict=True)}
    rows = [
        checkpoint_row(reports, {kind: files[id(doc)] for kind, doc in reports.items()})
        for reports in groups.values()
    ]
    interpolate = [r["interpolate"] for r in groups.values()]
    return study_report(
        rows,
        interpolate,
        statistics or StatisticsOptions(),
        seed=seed,
        inputs={"reports": [str(p) for p in paths], "skipped": skipped},
        started=started,
    )


def study_report(
    rows: list[dict],
    interpolate: Sequence[dict],
    statistics: StatisticsOptions,
    *,
    seed: int,
    inputs: dict[str, Any],
    started: float,
) -> Report:
    """The study's report: the rows, and per OOD set every measure's statistics."""
    datasets = interpolate[0]["inputs"]["datasets"] if interpolate else []
    ood = sorted(
        {d["name"] for r in interpolate for d in r["inputs"]["datasets"] if d["role"] == "ood"}
    )
    correlations = {name: _correlations(rows, name, statistics, seed) for name in ood}
    return Report(
        command="study",
        inputs=inputs | {"num_checkpoints": len(rows), "datasets": datasets},
        config={"target": TARGET, "ood": ood, "statistics": asdict(statistics) | {"seed": seed}},
        results={"checkpoints": rows},
        summary={
            "correlations": correlations,
            "ranking": {name: ranking(c) for name, c in correlations.items()},
        },
        seconds=time.perf_counter() - started,
    )


def ranking(correlations: dict[str, dict]) -> list[str]:
    """The measures by |Spearman|, largest first; those without one last, by name."""
    return sorted(
        correlations,
        key=lambda m: (correlations[m]["spearman"] is None, -abs(correlations[m]["spearman"] or 0)),
    )


def _correlations(
    rows: list[dict], ood: str, statistics: StatisticsOptions, seed: int
) -> dict[str, dict]:
    """Per measure: its statistics against the gain on ``ood``, over the checkpoints having
    both."""
    target = f"{TARGET}[{ood}]"
    names = sorted({m for r in rows for m in r["measures"]} - {target})
    result = {}
    for measure in names:
        pairs = [
            (r["measures"][measure], r["measures"][target])
            for r in rows
            if measure in r["measures"] and target in r["measures"]
        ]
        found = correlate([p[0] for p in pairs], [p[1] for p in pairs], statistics, seed)
        result[measure] = {"checkpoints": len(pairs)} | found
    return result

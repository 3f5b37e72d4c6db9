"""The summary table of each report, as data: what a command, ``show`` and ``demo`` print.

A :class:`Table` is plain text in rows; the CLI draws it (rich, on stderr) or writes it as
GitHub markdown (``--format md``), and a Python user can read it as it is. Each table fits
an 80-column terminal without cutting a number: the ``names`` columns (dataset, layer) fold
a long name, the ``numbers`` columns never wrap. :func:`tables_of` finds a report's tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ReportError
from .gates import Check, Verdict, show_value


@dataclass(frozen=True)
class Mark:
    """A cell shown with emphasis: ``alarm`` (FAILURE, COLLAPSE, STRAGGLER, FAIL), ``caution``
    (a saturated rho), ``good`` (a passed check), ``strong`` (an interval excluding 0)."""

    text: str
    tone: str


Cell = str | Mark


@dataclass
class Table:
    """A titled table: ``names`` columns then ``numbers`` columns, and rows of cells."""

    title: str
    names: tuple[str, ...]
    numbers: tuple[str, ...] = ()
    rows: list[tuple[Cell, ...]] = field(default_factory=list)
    caption: str = ""
    caption_left: bool = False  # a caption of several clauses reads better from the left

    def add(self, *cells: Cell) -> None:
        self.rows.append(cells)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def path_table(doc: dict) -> Table:
    """Per dataset: endpoints, best alpha, gain, depth, barrier, failure mode."""
    table = Table(
        f"{doc['command']}: α 0 = zero-shot, 1 = fine-tuned",
        ("dataset", "role"),
        ("acc(0)", "acc(1)", "best α", "best", "gain", "depth", "barrier", "failure"),
    )
    path = doc["results"]["path"]
    first, last = at_alpha(path, 0.0), at_alpha(path, 1.0)
    for dataset in doc["inputs"]["datasets"]:
        name, s = dataset["name"], doc["summary"][dataset["name"]]
        failure = {True: Mark("FAILURE", "alarm"), False: "no", None: "-"}[s["failure_mode"]]
        table.add(
            name,
            dataset["role"],
            fmt(first[name]["accuracy"]),
            fmt(last[name]["accuracy"]),
            f"{s['best_alpha']:g}",
            fmt(s["best_accuracy"]),
            signed(s["gain"]),
            signed(s["depth"]),
            signed(s["barrier"]),
            failure,
        )
    return table


def at_alpha(path: list[dict], alpha: float) -> dict:
    """The metrics of the path's point at ``alpha``."""
    return next(point["metrics"] for point in path if point["alpha"] == alpha)


def layerwise_table(doc: dict) -> Table:
    """One row per layer, sorted by depth on the first OOD set (else the first set)."""
    datasets = doc["inputs"]["datasets"]
    focus = next((d for d in datasets if d["role"] == "ood"), datasets[0])["name"]
    table = Table(
        f"layerwise on {focus}: background {doc['config']['background']}, α 0 = zero-shot layer",
        ("layer",),
        ("tower", "gain", "depth", "barrier", "min acc", "collapse"),
    )
    rows = doc["summary"]["layers"]
    changed = sorted((r for r in rows if not r["unchanged"]), key=lambda r: -r[focus]["depth"])
    towers = {r["layer"]: r["tower"] for r in doc["results"]["layers"]}
    for row in changed:
        s = row[focus]
        table.add(
            row["layer"],
            towers.get(row["layer"], "-"),
            signed(s["gain"]),
            signed(s["depth"]),
            signed(s["barrier"]),
            fmt(s["min_accuracy"]),
            Mark("COLLAPSE", "alarm") if s["collapse"] else "no",
        )
    unchanged = [r["layer"] for r in rows if r["unchanged"]]
    if unchanged:
        table.caption = f"unchanged (not evaluated): {', '.join(unchanged)}"
    return table


def sharpness_table(doc: dict) -> Table:
    """Per dataset and rho: sharpness at the endpoints and its maximum on the path, or, for
    one model, sharpness with its standard error and the losses behind it."""
    path = doc["results"]["convention"] is not None
    kind = doc["results"]["kind"]
    title = f"sharpness ({kind})" + (": α 0 = zero-shot, 1 = fine-tuned" if path else "")
    columns = ("S(0)", "S(1)", "max S", "at α") if path else ("S", "stderr", "L", "L+δ")
    table = Table(title, ("dataset",), ("ρ", *columns, "saturated"))
    points = doc["results"]["points"]
    for dataset in doc["inputs"]["datasets"]:
        name = dataset["name"]
        for row in doc["summary"][name]:
            if path:
                at = "-" if row["max_alpha"] is None else f"{row['max_alpha']:g}"
                cells = [
                    signed(row["zero_shot"]),
                    signed(row["fine_tuned"]),
                    signed(row["max_sharpness"]),
                    at,
                ]
            else:
                m = next(p["metrics"][name] for p in points if p["rho"] == row["rho"])
                cells = [
                    signed(m["sharpness"]),
                    fmt(m["stderr"]),
                    fmt(m["clean_loss"]),
                    fmt(m["perturbed_loss"]),
                ]
            saturated = Mark("yes", "caution") if row["saturated"] else "no"
            table.add(name, f"{row['rho']:g}", *cells, saturated)
    return table


def straggler_table(doc: dict) -> Table:
    """Per layer, by sharpness (or depth): its robust z-score, the stragglers marked."""
    s = doc["summary"]
    stragglers = set(s["stragglers"])
    value = "sharpness" if s["by"] == "sharpness" else "depth"
    table = Table(
        f"stragglers on {s['rank_on']}: {s['rule']}",
        ("layer",),
        ("tower", value, "stderr", "zero-shot", "z", ""),
    )
    for row in sorted(doc["results"]["layers"], key=lambda r: -r[value]):
        table.add(
            row["layer"],
            row["tower"],
            signed(row[value]),
            fmt(row.get("stderr")),
            signed(row.get("zero_shot_sharpness")),
            f"{row['z']:+.2f}",
            Mark("STRAGGLER", "alarm") if row["layer"] in stragglers else "",
        )
    if s.get("spearman"):
        table.caption = "Spearman(sharpness, layer depth): " + ", ".join(
            f"{name} {fmt(v['spearman'], 2)} ({v['layers']} layers)"
            for name, v in s["spearman"].items()
        )
    return table


def prune_tables(doc: dict) -> list[Table]:
    """What was pruned, per layer; the paths before and after pruning when measured."""
    s, config = doc["summary"], doc["config"]
    table = Table(
        f"prune ({config['target']}, sparsity {config['sparsity']:g}): "
        f"{s['pruned']:,} of {s['numel']:,} entries in {s['tensors']} tensors",
        ("layer",),
        ("tensors", "pruned", "sparsity"),
    )
    for layer in s["layers"]:
        rows = [r for r in doc["results"]["tensors"] if r["layer"] == layer]
        pruned, numel = sum(r["pruned"] for r in rows), sum(r["numel"] for r in rows)
        table.add(layer, str(len(rows)), f"{pruned:,}", fmt(pruned / numel if numel else 0.0))
    if "before" not in s:
        return [table]
    paths = [
        {**doc, "command": f"{when} pruning", "summary": s[when], "results": {"path": path}}
        for when, path in (("before", doc["results"]["before"]), ("after", doc["results"]["after"]))
    ]
    return [table, *map(path_table, paths)]


def merge_table(doc: dict) -> Table:
    """The merged model: alpha and how it was chosen, the output, its format and architecture."""
    s, architecture = doc["summary"], doc["inputs"]["architecture"]
    kind = {"transformers": "transformers folder", "open_clip": "open_clip safetensors"}
    table = Table(f"merge: theta(alpha) at alpha {s['alpha']:g}", ("", ""))
    table.add("alpha", f"{s['alpha']:g} ({s['selection']})")
    table.add("output", s["output"])
    table.add("format", kind.get(s["format"], s["format"]))
    table.add("architecture", f"{architecture['name']} ({architecture['source']})")
    table.add("tensors", str(s["tensors"]))
    return table


def inspect_table(doc: dict) -> Table:
    """Per layer group: tower, tensors, parameters, and with two checkpoints the relative
    change ||ft - zs|| / ||zs||."""
    s = doc["summary"]
    title = (
        f"{s['model']} ({doc['inputs']['architecture']['source']}): {s['parameters']:,} "
        f"parameters in {s['tensors']} tensors, {', '.join(s['dtypes'])}, {s['head']} head"
    )
    if not s.get("text_tower", True):
        title += ", image tower only"
    if s.get("source_layout"):
        title += f", converted from a {s['source_layout']}"
    pair = "fine_tuned" in doc["inputs"]["checkpoints"]
    change = ("|ft-zs|/|zs|",) if pair else ()
    table = Table(title, ("layer",), ("tower", "tensors", "parameters", *change))
    for row in doc["results"]["layers"]:
        cells = [row["layer"], row["tower"], str(len(row["tensors"])), f"{row['parameters']:,}"]
        if pair:
            cells.append(fmt(row["relative_change"], 4) if row["relative_change"] else "unchanged")
        table.add(*cells)
    return table


def study_tables(doc: dict) -> list[Table]:
    """Per OOD set: the measures ranked by |Spearman|, with the interval, tau-b and p; the
    measures without a correlation listed under the table by reason."""
    correlations = doc["summary"]["correlations"]
    confidence = doc["config"].get("statistics", {}).get("confidence", 0.95)
    tables = []
    for name, found in correlations.items():
        table = Table(
            f"{name}: correlation with the OOD gain over {doc['inputs']['num_checkpoints']} "
            f"fine-tuned checkpoints; * the {confidence:.0%} interval excludes 0",
            ("measure",),
            ("n", "ρ", "interval", "τ-b", "p", ""),
            caption_left=True,
        )
        without: dict[str, list[str]] = {}  # reason -> measures
        for measure in doc["summary"].get("ranking", {}).get(name, sorted(found)):
            c = found[measure]
            if c["spearman"] is None and c.get("reason"):
                without.setdefault(c["reason"], []).append(measure)
                continue
            interval = c.get("interval")
            table.add(
                measure,
                str(c["checkpoints"]),
                fmt(c["spearman"], 2),
                f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-",
                fmt(c.get("kendall_tau_b"), 2),
                fmt(c.get("p_value"), 3),
                Mark("*", "strong") if c.get("excludes_zero") else "",
            )
        table.caption = "; ".join(
            f"no correlation, {reason}: {', '.join(m)}" for reason, m in without.items()
        )
        tables.append(table)
    return tables


def verdict_table(verdict: Verdict, title: str) -> Table:
    """``check``'s verdict: one row per check, the failures with their message."""
    table = Table(
        f"clipsharp check {title}", ("", "dataset", "field", "requirement", "value", "detail")
    )
    for c in verdict.checks:
        mark = Mark("ok", "good") if c.passed else Mark("FAIL", "alarm")
        value = show_value(c.value, near=c.threshold)
        cells = (c.dataset or "-", c.field or "-", _requirement(c), value)
        table.add(mark, *cells, "" if c.passed else c.message)
    return table


def verdict_markdown(verdict: Verdict, title: str) -> str:
    """A one-line verdict and a GitHub-flavoured table, one row per check (for
    ``$GITHUB_STEP_SUMMARY``)."""
    failed, total = len(verdict.failures), len(verdict.checks)
    if verdict.passed:
        line = f"**✅ clipsharp check passed**: {total} of {total} checks passed on `{title}`"
    else:
        line = f"**❌ clipsharp check failed**: {failed} of {total} checks failed on `{title}`"
    rows = [line, "", "| | dataset | field | requirement | value | detail |", "|" + "---|" * 6]
    for c in verdict.checks:
        mark = "✅" if c.passed else "❌"
        cells = [mark, c.dataset or "-", c.field or "-", _requirement(c), show_value(c.value)]
        cells = [_escaped(text).replace("\n", " ") for text in [*cells, c.message]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _requirement(check: Check) -> str:
    if check.threshold is None:
        return check.op or "-"
    return f"{check.op} {show_value(check.threshold)}"


TABLES: dict[str, Callable[[dict], Table | list[Table]]] = {  # command -> its summary
    "interpolate": path_table,
    "layerwise": layerwise_table,
    "sharpness": sharpness_table,
    "stragglers": straggler_table,
    "prune": prune_tables,
    "merge": merge_table,
    "inspect": inspect_table,
    "study": study_tables,
}


def tables_of(doc: dict, name: str = "the report") -> list[Table]:
    """The summary tables of a report (one, or one per part: prune's before and after, a
    study's OOD sets); a report of a command without one is a :class:`ReportError`."""
    made = TABLES.get(doc.get("command"))
    if made is None:
        raise ReportError(
            f"{name} is a {doc.get('command')!r} report, which has no summary table; "
            f"show renders {', '.join(TABLES)} reports"
        )
    found = made(doc)
    return found if isinstance(found, list) else [found]


def markdown(tables: list[Table]) -> str:
    """GitHub-flavoured markdown of the tables: a bold title, the table, its caption."""
    return "\n".join(_markdown(table) for table in tables)


def _markdown(table: Table) -> str:
    def cells(row) -> str:
        return "| " + " | ".join(_escaped(text_of(cell)) for cell in row) + " |"

    lines = [f"**{_escaped(table.title)}**", ""] if table.title else []
    lines.append(cells([*table.names, *table.numbers]))
    lines.append("|" + "|".join(["---"] * len(table.names) + ["---:"] * len(table.numbers)) + "|")
    lines += [cells(row) for row in table.rows]
    if table.caption:
        lines += ["", _escaped(table.caption)]
    return "\n".join(lines) + "\n"


def text_of(cell: Cell) -> str:
    return cell.text if isinstance(cell, Mark) else cell


def _escaped(text: str) -> str:
    return text.replace("|", "\\|")

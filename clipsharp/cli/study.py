"""``clipsharp study``: which measure ranks the OOD gain across fine-tuned checkpoints."""

from __future__ import annotations

from rich.console import Group
from rich.markup import escape

from ..options import InputOptions, StudyOptions, SweepOptions
from . import options as opt
from .output import config_read, console, finish
from .params import Rendering, offer
from .progress import fmt, progress_bars, summary_table


@offer(
    "sweep.run.path.exclude",
    "sweep.run.path.extrapolate",
    "sweep.run.path.failure_threshold",
    "sweep.stragglers.layerwise",
    "sweep.stragglers.by",
    "sweep.stragglers.rank_on",
    helps={
        "sweep.run.data.seed": "Seed of every random choice: --limit subsets, noise draws, "
        "the bootstrap and the permutations.",
        "resume": "Continue an analysis cut short from its journal in --reports-dir (same "
        "inputs and options only). Finished models are reused with or without it.",
    },
)
def command(
    *,
    output: opt.Output,
    resume: opt.Resume,
    study: StudyOptions,
    inputs: InputOptions,
    sweep: SweepOptions,
    rendering: Rendering,
) -> None:
    """Which measure ranks the OOD gain across fine-tuned checkpoints, and how sure that is.

    The paper's central claim, tested on your own models: for many fine-tunes
    of one zero-shot model, does sharpness (or depth, barrier, the stragglers,
    the size of the change, ...) rank their gain from robust fine-tuning? Given
    checkpoints, runs interpolate, sharpness and stragglers (and layerwise with
    --layerwise) on each model, writing their reports, resumably; given reports,
    matches them to checkpoints by sha256. Per OOD set and measure: Spearman,
    Kendall tau-b, a bootstrap interval and a permutation p-value.

    Example:

        clipsharp study zs.safetensors sweep/*.safetensors --ood data/shifted -o study.json
    """
    from ..analyses.study import study as run_study

    out = console()
    with progress_bars(out) as progress:
        report = run_study(
            study,
            inputs,
            sweep,
            output=output,
            resume=resume,
            progress=progress,
            say=lambda text: out.print(escape(text)),
            reads=config_read(),
        )
    for skipped in report.inputs.get("skipped", []):
        out.print(f"note: {skipped} is not a report a study reads; skipped", markup=False)
    finish(report, study_table(report.to_dict()), output, out, form=rendering.format, written=True)


def study_table(doc: dict) -> Group:
    """Per OOD set: the measures ranked by |Spearman|, with the interval, tau-b and p; the
    measures without a correlation listed under the table by reason (80 columns)."""
    correlations = doc["summary"]["correlations"]
    confidence = doc["config"].get("statistics", {}).get("confidence", 0.95)
    tables = []
    for name, found in correlations.items():
        table = summary_table(
            f"{escape(name)}: correlation with the OOD gain over "
            f"{doc['inputs']['num_checkpoints']} fine-tuned checkpoints; * the {confidence:.0%} "
            "interval excludes 0",
            ["measure"],
            ["n", "ρ", "interval", "τ-b", "p", ""],
        )
        without: dict[str, list[str]] = {}  # reason -> measures
        for measure in doc["summary"].get("ranking", {}).get(name, sorted(found)):
            c = found[measure]
            if c["spearman"] is None and c.get("reason"):
                without.setdefault(c["reason"], []).append(measure)
                continue
            interval = c.get("interval")
            shown = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-"
            table.add_row(
                escape(measure),
                str(c["checkpoints"]),
                fmt(c["spearman"], 2),
                shown,
                fmt(c.get("kendall_tau_b"), 2),
                fmt(c.get("p_value"), 3),
                "[bold]*[/]" if c.get("excludes_zero") else "",
            )
        table.caption = escape(
            "; ".join(f"no correlation, {reason}: {', '.join(m)}" for reason, m in without.items())
        )
        table.caption_justify = "left"
        tables.append(table)
    return Group(*tables)

"""``clipsharp study``: which measure ranks the OOD gain across fine-tuned checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.markup import escape

from ..errors import ConfigError
from . import options as opt
from .common import Common, Measure, analysis
from .output import (
    check_folder,
    check_output,
    checkpoint_inputs,
    console,
    finish,
    fmt,
    guard,
    progress_bars,
    summary_table,
)

STUDY = "Study"
STATISTICS = "Statistics"
Resume = opt.with_help(
    opt.Resume,
    "Continue an analysis cut short from its journal in --reports-dir (same inputs and "
    "options only). Finished models are reused with or without it.",
)


def _option(kind, help: str, panel: str = STUDY, **kwargs):
    return Annotated[kind, typer.Option(help=help, rich_help_panel=panel, **kwargs)]


@analysis(helps={"seed": "Seed of every random choice: --limit subsets, noise draws, the "
                 "bootstrap and the permutations."})  # fmt: skip
def command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="ZERO_SHOT FINE_TUNED... | REPORT...",
            help="A zero-shot checkpoint and its fine-tuned checkpoints: run every analysis "
            "of each; or reports (.json) already written: interpolate reports (one per "
            "fine-tuned checkpoint) with any sharpness, layerwise and stragglers reports.",
            show_default=False,
        ),
    ],
    alphas: opt.Alphas = "0:1:0.1",
    sharpness_alphas: _option(
        str,
        "Sharpness along the path at these alphas (1 is always added).",
        opt.PATH,
        metavar="A,B,C|START:STOP:STEP",
    ) = "0,0.5,1",  # fmt: skip
    z: _option(float, "Robust z-score above which a layer is a straggler.") = 3.5,
    top_k: _option(int | None, "Instead of --z: the K highest layers of each tower.") = None,
    layerwise: Annotated[
        bool,
        typer.Option(
            "--layerwise",
            help="Also run layerwise (block granularity) on each model.",
            rich_help_panel=STUDY,
        ),
    ] = False,
    reports_dir: _option(
        Path | None,
        "Folder of each model's reports (NAME.COMMAND.json). "
        "Default: STUDY.reports beside -o STUDY.json.",
        metavar="DIR",
    ) = None,  # fmt: skip
    bootstrap: _option(int, "Bootstrap resamples of the models.", STATISTICS) = 2000,
    confidence: _option(float, "Coverage of the bootstrap interval.", STATISTICS) = 0.95,
    permutations: _option(
        int, "Random pairings for the p-value above 8 models (8 or fewer: exact).", STATISTICS
    ) = 10000,
    output: opt.Output = None,
    resume: Resume = False,
    *,
    common: Common,
    measure: Measure,
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
    from ..statistics import StatisticsOptions

    form = common.form
    statistics = StatisticsOptions(bootstrap, confidence, permutations, common.seed)
    report_path = check_output(output)
    reports = [p for p in inputs if p.suffix.lower() == ".json"]
    out = console()
    if len(reports) == len(inputs):
        report = _from_reports(inputs, output, common, statistics)
        for skipped in report.inputs["skipped"]:
            out.print(f"note: {skipped} is not a report a study reads; skipped", markup=False)
    elif reports:
        raise ConfigError(
            f"{reports[0]} is a report among checkpoints; give checkpoints (zero-shot first) "
            "or reports, not both"
        )
    else:
        from ..config import parse_alphas
        from ..stragglers import StragglerOptions
        from ..sweep import SweepOptions

        options = SweepOptions(
            run=common.run_options(alphas=alphas), sharpness=measure.options(),
            sharpness_alphas=parse_alphas(sharpness_alphas),
            stragglers=StragglerOptions(z=z, top_k=top_k),
            layerwise=_layerwise() if layerwise else None, statistics=statistics,
        )  # fmt: skip
        folder = _reports_dir(reports_dir, report_path)
        report = _from_checkpoints(inputs, folder, options, output, resume, common, out)
    finish(report, study_table(report.to_dict()), output, out, form=form)


def _layerwise():
    from ..layerwise import LayerwiseOptions

    return LayerwiseOptions()


def _reports_dir(given: Path | None, output: Path | None) -> Path:
    if given is not None:
        return given
    if output is None:
        raise ConfigError(
            "a study of checkpoints writes each model's reports: give -o STUDY.json or "
            "--reports-dir DIR"
        )
    return output.with_name(output.name.removesuffix(".json") + ".reports")


def _from_reports(paths: list[Path], output, common: Common, statistics):
    from ..study import run_study

    if common.id or common.ood:
        raise ConfigError("--id and --ood are for a study of checkpoints; reports name theirs")
    guard([("-o", output)], [("the report", path) for path in paths])
    return run_study(paths, statistics)


def _from_checkpoints(paths, folder: Path, options, output, resume: bool, common, out):
    from ..distributed import is_main
    from ..sweep import run_sweep

    if len(paths) < 2:
        raise ConfigError("give the zero-shot checkpoint, then one or more fine-tuned ones")
    check_folder(folder, "--reports-dir")
    roles = [{"zero_shot": paths[0], "fine_tuned": ft} for ft in paths[1:]]
    read = [item for r in roles for item in checkpoint_inputs(r)]
    guard(
        [("-o", output), ("--reports-dir", folder), ("--data-cache", common.data_cache)],
        [*read, *common.inputs()],
    )
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
    with progress_bars(out) as progress:
        return run_sweep(
            [common.reading(r) for r in roles], options, folder, resume=resume,
            progress=progress, say=lambda text: out.print(escape(text)),
        )  # fmt: skip


def study_table(doc: dict) -> Group:
    """Per OOD set: the measures ranked by |Spearman|, with the interval, tau-b and p."""
    correlations = doc["summary"]["correlations"]
    confidence = doc["config"].get("statistics", {}).get("confidence", 0.95)
    tables = []
    for name, found in correlations.items():
        table = summary_table(
            f"{name}: correlation with the OOD gain over {doc['inputs']['num_checkpoints']} "
            f"fine-tuned checkpoints; * the {confidence:.0%} interval excludes 0",
            ["measure"],
            ["n", "ρ", "interval", "τ-b", "p", ""],
        )
        ranked = doc["summary"].get("ranking", {}).get(name, sorted(found))
        for measure in ranked:
            c = found[measure]
            interval = c.get("interval")
            shown = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-"
            mark = "[bold]*[/]" if c.get("excludes_zero") else escape(c.get("reason") or "")
            table.add_row(
                escape(measure), str(c["checkpoints"]), fmt(c["spearman"], 2), shown,
                fmt(c.get("kendall_tau_b"), 2), fmt(c.get("p_value"), 3), mark,
            )  # fmt: skip
        tables.append(table)
    return Group(*tables)

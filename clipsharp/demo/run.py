"""The analyses ``clipsharp demo`` runs on its pairs, in the order a user would.

For the careful and the aggressive fine-tune: the interpolation path, the
layer-wise paths and sharpness along the path. On the aggressive pair (the
failure mode): the straggler layers, pruned, and the path before and after.
Every report is written to ``ROOT/reports`` and its figure to ``ROOT/figures``.
Then the study of every fine-tune (``sweep.run_sweep``): ``ROOT/study.json``, each
model's reports in ``ROOT/study.reports``, its figure ``ROOT/figures/study.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..analyses.interpolate import run_interpolation
from ..analyses.layerwise import run_layerwise
from ..analyses.prune import add_before_and_after, run_prune
from ..analyses.sharpness import run_sharpness
from ..analyses.stragglers import run_stragglers
from ..analyses.study import run_sweep
from ..core.workspace import Inputs, Workspace
from ..data.specs import DatasetSpec
from ..options import (
    DataOptions,
    DemoOptions,
    EvalOptions,
    LayerwiseOptions,
    PathOptions,
    PruneOptions,
    RunOptions,
    SharpnessOptions,
    StragglerOptions,
    SweepOptions,
    check_seed,
)
from ..progress import Progress
from ..reports.plot import figures, save_figures
from ..reports.report import Report
from .build import DemoArtifacts, DemoRecipe, build_demo

PAIRS = ("careful", "aggressive")  # the fine-tunes analysed one by one; the study takes all


@dataclass(frozen=True)
class TourOptions:
    """What the demo measures; sized so a cold `clipsharp demo` takes under 3 min on 2 CPUs."""

    alphas: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(11))
    layer_alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # layer-wise and sharpness
    rho: float = 0.1  # sharpness radius, relative to |w|: measured not to saturate here (0.3 does)
    iterations: int = 8  # noise draws per sharpness point
    limit: int = 512  # examples per dataset for sharpness and stragglers
    top_k: int = 2  # stragglers pruned: the two sharpest layers (five layers make z weak)
    sparsity: float = 0.5  # fraction of each straggler tensor returned to zero-shot
    study_iterations: int = 2  # noise draws per sharpness point of each model of the study
    study_alphas: tuple[float, ...] = (0.0, 1.0)  # the study's sharpness path (interpolate: alphas)
    device: str = "auto"
    batch_size: int = 128
    prefetch_blocks: int | None = None  # None: from the cores and the device
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed)  # before the models are trained, not after


def run_demo(
    options: DemoOptions, progress: Progress | None = None
) -> tuple[DemoArtifacts, dict[str, Report]]:
    """The ``demo`` command: build the models (or find them cached) in ``options.out``, then
    run the tour; ``quick``: the toy recipe and a short tour (the files, not the science)."""
    tour = tour_of(options)  # its seed checked before any training
    recipe = DemoRecipe.tiny() if options.quick else DemoRecipe()
    artifacts = build_demo(
        options.out, force=options.force, progress=progress, seed=options.seed, recipe=recipe
    )
    return artifacts, run_tour(artifacts, tour, progress)


def tour_of(options: DemoOptions) -> TourOptions:
    """What the tour measures for these options: their evaluation flags, a short tour when
    ``quick``."""
    evaluation = options.evaluation
    tour = TourOptions(
        device=evaluation.device,
        batch_size=evaluation.batch_size,
        prefetch_blocks=evaluation.prefetch_blocks,
        seed=options.seed,
    )
    return replace(tour, iterations=2, limit=64) if options.quick else tour


def run_tour(
    artifacts: DemoArtifacts, options: TourOptions, progress: Progress | None = None
) -> dict[str, Report]:
    """Run every analysis, write the reports and figures, return the reports by file stem."""
    reports_dir, figures_dir = artifacts.root / "reports", artifacts.root / "figures"
    reports_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = _run_options(options, options.alphas)
    short = _run_options(options, options.layer_alphas)
    sampled = replace(short, data=replace(short.data, limit=options.limit))
    measure = SharpnessOptions(rhos=(options.rho,), iterations=options.iterations)
    reports: dict[str, Report] = {}
    for name in PAIRS:
        fine_tuned = artifacts.fine_tuned[name]
        workspace = _open(artifacts, fine_tuned, path)
        reports[f"interpolate-{name}"] = run_interpolation(workspace, path, progress=progress)
        reports[f"layerwise-{name}"] = run_layerwise(
            workspace, short, LayerwiseOptions(), progress=progress
        )
        sample = _open(artifacts, fine_tuned, sampled)
        reports[f"sharpness-{name}"] = run_sharpness(sample, sampled, measure, progress=progress)
        if name == "aggressive":
            reports |= _repair(artifacts, workspace, sample, sampled, measure, options, progress)
    for stem, report in reports.items():
        report.write(reports_dir / f"{stem}.json")
        save_figures(figures([report.to_dict()], [stem]), figures_dir / f"{stem}.png")
    study = run_study_of_fine_tunes(artifacts, options, progress)
    save_figures(figures([study.to_dict()], ["study"]), figures_dir / "study.png")
    return reports | {"study": study}


def run_study_of_fine_tunes(
    artifacts: DemoArtifacts, options: TourOptions, progress: Progress | None = None
) -> Report:
    """``clipsharp study`` of every fine-tune: ``ROOT/study.json``, reports in ``study.reports``.

    Every example of both sets; sharpness and stragglers with ``study_iterations`` draws at
    ``rho``, sharpness at ``study_alphas``; the straggler rule of the tour (``top_k``).
    """
    folder = artifacts.root / "study.reports"
    folder.mkdir(parents=True, exist_ok=True)
    sweep = SweepOptions(
        run=_run_options(options, options.alphas),
        sharpness=SharpnessOptions(rhos=(options.rho,), iterations=options.study_iterations),
        sharpness_alphas=options.study_alphas,
        stragglers=StragglerOptions(top_k=options.top_k),
    )
    pairs = [_inputs(artifacts, fine_tuned) for fine_tuned in artifacts.fine_tuned.values()]
    study = run_sweep(pairs, sweep, folder, progress=progress)
    study.write(artifacts.root / "study.json")
    return study


def _repair(artifacts, workspace, sample, sampled, measure, options, progress) -> dict:
    """Stragglers of the aggressive pair, pruned back toward zero-shot; the path before/after."""
    rule = StragglerOptions(top_k=options.top_k)
    stragglers = run_stragglers(sample, sampled, measure, rule, progress=progress)
    output = artifacts.root / "fine_tuned_aggressive_pruned.safetensors"
    layers = ",".join(stragglers.summary["stragglers"])
    pruning = PruneOptions(layers=layers, sparsity=options.sparsity, target="task-vector")
    report, pruned = run_prune(workspace.checkpoints, workspace.arch, output, pruning)
    add_before_and_after(report, workspace, pruned, _run_options(options, options.alphas), progress)
    return {"stragglers-aggressive": stragglers, "prune-aggressive": report}


def _run_options(options: TourOptions, alphas: tuple[float, ...]) -> RunOptions:
    return RunOptions(
        data=DataOptions(seed=options.seed),
        eval=EvalOptions(
            device=options.device,
            batch_size=options.batch_size,
            prefetch_blocks=options.prefetch_blocks,
        ),
        path=PathOptions(alphas=alphas),
    )


def _inputs(artifacts: DemoArtifacts, fine_tuned: Path) -> Inputs:
    return Inputs(
        checkpoints={"zero_shot": artifacts.zero_shot, "fine_tuned": fine_tuned},
        specs=(
            DatasetSpec.parse(str(artifacts.in_dist), role="id"),
            DatasetSpec.parse(str(artifacts.shifted), role="ood"),
        ),
    )


def _open(artifacts: DemoArtifacts, fine_tuned: Path, options: RunOptions) -> Workspace:
    return _inputs(artifacts, fine_tuned).open(options.data, options.eval)

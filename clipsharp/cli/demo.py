"""``clipsharp demo``: build the tiny CLIP pairs on the bundled digits and analyse them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

from ..core.outputs import check_folder
from ..options import EvalOptions, option
from .output import console, draw, guard
from .params import offer
from .progress import progress_bars


@offer(
    *(
        f"evaluation.{name}"
        for name in ("precision", "templates", "head_classnames", "subset_logits", "block_images")
    )
)
def command(
    *,
    out: Annotated[
        Path,
        option(
            Path("clipsharp-demo"),
            "Folder for the data, models, reports and figures.",
            metavar="DIR",
        ),
    ],
    force: Annotated[bool, option(False, "Rebuild the models even if cached.")],
    quick: Annotated[
        bool,
        option(
            False, "A toy recipe that builds in seconds: the commands and files, not the science."
        ),
    ],
    seed: Annotated[
        int, option(0, "Seed of the demo's training and of its analyses.", metavar="N")
    ],
    evaluation: EvalOptions,
) -> None:
    """Build tiny zero-shot and fine-tuned CLIPs on bundled digits, and analyse them.

    A zero-shot CLIP is trained on captioned handwritten digits under broad
    variation; six fine-tunes train its image tower: a careful one (a moderate
    learning rate, 2 % of its digits colour-inverted), an aggressive one (a high
    learning rate, clean digits) and four on clean digits at learning rates in
    between. The OOD set is the held-out digits colour-inverted. Then:
    interpolate, layerwise and sharpness on the careful and aggressive pairs;
    stragglers on the aggressive pair, pruned, and its path before and after;
    a study of all six fine-tunes. Reports go to
    OUT/reports, figures to OUT/figures, the study to OUT/study.json (its
    models' reports to OUT/study.reports). Needs no download.

    The first run trains the models (one to two minutes on 2 CPU cores) and
    caches them in --out.

    Example:

        clipsharp demo --out clipsharp-demo
    """
    from ..demo.build import DemoRecipe, build_demo
    from ..demo.run import TourOptions, run_tour

    guard([("--out", out)], [])
    check_folder(out, "--out")
    recipe = DemoRecipe.tiny() if quick else DemoRecipe()
    tour = TourOptions(device=evaluation.device, batch_size=evaluation.batch_size, seed=seed)
    if quick:
        tour = replace(tour, iterations=2, limit=64)
    say = console()
    with progress_bars(say) as progress:
        artifacts = build_demo(out, force=force, progress=progress, seed=seed, recipe=recipe)
        reports = run_tour(artifacts, tour, progress)
    say.print(f"demo models {'built' if artifacts.built else 'reused from the cache'} in {out}")
    show(reports, say)
    say.print(
        f"reports: {out / 'reports'}   figures: {out / 'figures'}   study: {out / 'study.json'}"
    )


def show(reports: dict, say) -> None:
    """The summary tables of the path, the stragglers, the repair and the study."""
    from ..demo.run import PAIRS
    from ..reports.tables import tables_of

    for name in PAIRS:
        say.print(draw(tables_of(reports[f"interpolate-{name}"].to_dict())[0]))
        say.print(f"[dim]zero-shot vs the {name} fine-tune[/dim]\n")
    for kind in ("stragglers-aggressive", "prune-aggressive", "study"):
        for table in tables_of(reports[kind].to_dict()):
            say.print(draw(table))

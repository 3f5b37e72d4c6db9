"""``clipsharp demo``: build the tiny CLIP pairs on the bundled digits and analyse them."""

from __future__ import annotations

from ..core.outputs import check_folder
from ..options import DemoOptions
from .output import console, draw, guard
from .params import offer
from .progress import progress_bars


@offer(
    *(
        f"demo.evaluation.{name}"
        for name in ("precision", "templates", "head_classnames", "subset_logits", "block_images")
    )
)
def command(*, demo: DemoOptions) -> None:
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
    from ..demo.run import run_demo

    out = demo.out
    guard([("--out", out)], [])
    check_folder(out, "--out")
    say = console()
    with progress_bars(say) as progress:
        artifacts, reports = run_demo(demo, progress)
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

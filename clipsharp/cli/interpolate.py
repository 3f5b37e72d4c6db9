"""``clipsharp interpolate``: accuracy and loss along the WiSE-FT path."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from . import options as opt
from .common import Common, analysis
from .output import (
    check_output,
    check_resume,
    checkpoint_inputs,
    console,
    finish,
    fmt,
    gate,
    guard,
    progress_bars,
    signed,
)


@analysis()
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    alphas: opt.Alphas = "0:1:0.1",
    extrapolate: opt.Extrapolate = False,
    exclude: opt.Exclude = None,
    failure_threshold: opt.FailureThreshold = 0.0,
    output: opt.Output = None,
    resume: opt.Resume = False,
    fail_on: opt.FailOn = None,
    *,
    common: Common,
) -> None:
    """Accuracy and loss along theta(alpha) = (1 - alpha) zero_shot + alpha fine_tuned.

    Reports, per dataset, the best alpha, the gain over zero-shot, the depth and
    barrier of the loss along the path, and (OOD sets) whether robust
    fine-tuning fails: no alpha beats the zero-shot model.

    Example:

        clipsharp interpolate zs.safetensors ft.safetensors \\
            --id data/in_dist --ood data/shifted -o path.json
    """
    from ..interpolation import run_interpolation

    run = common.run_options(
        alphas=alphas, extrapolate=extrapolate, exclude=exclude, failure_threshold=failure_threshold
    )
    form = common.form
    opt.check_fail_on(fail_on, "failure-mode")
    report_path = check_output(output)
    roles = {"zero_shot": zero_shot, "fine_tuned": fine_tuned}
    guard(
        [("-o", output), ("--data-cache", common.data_cache)],
        [*checkpoint_inputs(roles), *common.inputs()],
    )
    journal = check_resume(resume, report_path)
    out = console()
    with progress_bars(out) as progress:
        report = run_interpolation(
            common.reading(roles), run, progress=progress, journal=journal, resume=resume
        )
    finish(report, path_table(report.to_dict()), output, out, journal, form=form)
    gate(report, fail_on, out)


def path_table(doc: dict) -> Table:
    """Per dataset: endpoints, best alpha, gain, depth, barrier, failure mode."""
    table = Table(title=f"{doc['command']}: alpha 0 = zero-shot, 1 = fine-tuned")
    for column in ("dataset", "role", "acc(0)", "acc(1)", "best alpha", "best acc"):
        table.add_column(column, justify="left" if column in ("dataset", "role") else "right")
    for column in ("gain", "depth", "barrier", "failure"):
        table.add_column(column, justify="right")
    path = doc["results"]["path"]
    first, last = _at(path, 0.0), _at(path, 1.0)
    for dataset in doc["inputs"]["datasets"]:
        name, s = dataset["name"], doc["summary"][dataset["name"]]
        failure = {True: "[bold red]FAILURE[/]", False: "no", None: "-"}[s["failure_mode"]]
        table.add_row(
            escape(name), dataset["role"], fmt(first[name]["accuracy"]),
            fmt(last[name]["accuracy"]), f"{s['best_alpha']:g}", fmt(s["best_accuracy"]),
            signed(s["gain"]),
            signed(s["depth"]), signed(s["barrier"]), failure,
        )  # fmt: skip
    return table


def _at(path: list[dict], alpha: float) -> dict:
    return next(point["metrics"] for point in path if point["alpha"] == alpha)

"""``clipsharp interpolate``: accuracy and loss along the WiSE-FT path."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..options import InputOptions, RunOptions
from . import options as opt
from .output import config_read, console, finish, gate
from .params import Rendering, offer
from .progress import fmt, progress_bars, signed, summary_table


@offer(
    helps={
        "inputs.ood": "Out-of-distribution dataset SOURCE[:SPLIT]; repeat for several. "
        "Failure mode is judged on these.",
        "fail_on": "Exit 1 after writing the report when an OOD set fails: failure-mode.",
    }
)
def command(
    zero_shot: opt.ZeroShot,
    fine_tuned: opt.FineTuned,
    *,
    output: opt.Output,
    resume: opt.Resume,
    fail_on: opt.FailOn,
    inputs: InputOptions,
    run: RunOptions,
    rendering: Rendering,
) -> None:
    """Accuracy and loss along theta(alpha) = (1 - alpha) zero_shot + alpha fine_tuned.

    Reports, per dataset, the best alpha, the gain over zero-shot, the depth and
    barrier of the loss along the path, and (OOD sets) whether robust
    fine-tuning fails: no alpha beats the zero-shot model.

    Example:

        clipsharp interpolate zs.safetensors ft.safetensors \\
            --id data/in_dist --ood data/shifted -o path.json
    """
    from ..analyses.interpolate import run_interpolation
    from ..core.workspace import Inputs

    opt.check_fail_on(fail_on, "failure-mode")
    out = console()
    with progress_bars(out) as progress:
        report = run_interpolation(
            Inputs.of({"zero_shot": zero_shot, "fine_tuned": fine_tuned}, inputs),
            run,
            output=output,
            resume=resume,
            progress=progress,
            reads=config_read(),
        )
    doc = report.to_dict()
    warn_chance(doc, out)
    finish(report, path_table(doc), output, out, form=rendering.format, written=True)
    gate(report, fail_on, out)


def path_table(doc: dict) -> Table:
    """Per dataset: endpoints, best alpha, gain, depth, barrier, failure mode (80 columns)."""
    table = summary_table(
        f"{doc['command']}: α 0 = zero-shot, 1 = fine-tuned",
        ["dataset", "role"],
        ["acc(0)", "acc(1)", "best α", "best", "gain", "depth", "barrier", "failure"],
    )
    path = doc["results"]["path"]
    first, last = _at(path, 0.0), _at(path, 1.0)
    for dataset in doc["inputs"]["datasets"]:
        name, s = dataset["name"], doc["summary"][dataset["name"]]
        failure = {True: "[bold red]FAILURE[/]", False: "no", None: "-"}[s["failure_mode"]]
        table.add_row(
            escape(name),
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


def warn_chance(doc: dict, out: Console) -> None:
    """A warning per dataset on which both endpoints are at chance: nothing to interpolate."""
    from ..core.distributed import is_main
    from ..reports.metrics import no_better_than_chance

    if not is_main():
        return
    path = doc["results"]["path"]
    for dataset in doc["inputs"]["datasets"]:
        name, classes = dataset["name"], dataset.get("num_classes")
        ends = [_at(path, 0.0)[name], _at(path, 1.0)[name]]
        if not classes or not all(
            no_better_than_chance(m["accuracy"], classes, m["num_examples"]) for m in ends
        ):
            continue
        out.print(
            f"[yellow]warning:[/] {escape(name)}: the zero-shot and the fine-tuned model are both "
            f"at chance (accuracy {fmt(ends[0]['accuracy'])} and {fmt(ends[1]['accuracy'])}, "
            f"chance {fmt(1 / classes)}): the path says nothing here; check the labels, "
            "--classnames and --templates, or the checkpoints"
        )


def _at(path: list[dict], alpha: float) -> dict:
    return next(point["metrics"] for point in path if point["alpha"] == alpha)

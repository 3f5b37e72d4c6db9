"""``clipsharp sharpness``: adaptive average (or worst-case) sharpness along the path."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from ..options import InputOptions, RunOptions, SharpnessOptions
from . import options as opt
from .output import config_read, console, finish
from .params import Rendering, offer
from .progress import fmt, progress_bars, signed, summary_table


@offer(
    "run.path.exclude",
    "run.path.failure_threshold",
    defaults={"run.data.limit": 1024},
    helps={
        "run.path.alphas": "Points of the path (two checkpoints): a list 0,0.5,1 or a range "
        "start:stop:step (inclusive), measured exactly as given."
    },
)
def command(
    checkpoints: opt.Checkpoints,
    *,
    output: opt.Output,
    resume: opt.Resume,
    inputs: InputOptions,
    run: RunOptions,
    sharpness: SharpnessOptions,
    rendering: Rendering,
) -> None:
    """Adaptive sharpness along the path, or of one model (the paper's Fig. 3).

    Average (Andriushchenko et al., 2023): E[L(w + delta)] - L(w) with
    delta ~ N(0, rho^2 |w|^2), over --iterations noise draws shared by every
    alpha. Worst: the largest loss rise with ||delta / |w|||_p <= rho. Perturbs
    the image tower; the zero-shot head stays fixed. Weights are restored
    exactly after every draw.

    Example:

        clipsharp sharpness zs.safetensors ft.safetensors \\
            --ood data/shifted -o sharp.json
    """
    from ..analyses.sharpness import run_sharpness
    from ..core.workspace import Inputs

    out = console()
    with progress_bars(out) as progress:
        report = run_sharpness(
            Inputs.of(_roles(checkpoints), inputs),
            run,
            sharpness,
            output=output,
            resume=resume,
            progress=progress,
            reads=config_read(),
        )
    doc = report.to_dict()
    warn_saturated(doc, out)
    finish(report, sharpness_table(doc), output, out, form=rendering.format, written=True)


def _roles(checkpoints: list) -> dict:
    if len(checkpoints) == 1:
        return {"model": checkpoints[0]}
    if len(checkpoints) == 2:
        return {"zero_shot": checkpoints[0], "fine_tuned": checkpoints[1]}
    raise ConfigError(
        f"got {len(checkpoints)} checkpoints; give one (a model) or two (zero-shot, fine-tuned)"
    )


def sharpness_table(doc: dict) -> Table:
    """Per dataset and rho: sharpness at the endpoints and its maximum on the path, or, for
    one model, sharpness with its standard error and the losses behind it."""
    path = doc["results"]["convention"] is not None
    kind = doc["results"]["kind"]
    title = (
        f"sharpness ({kind}): α 0 = zero-shot, 1 = fine-tuned" if path else f"sharpness ({kind})"
    )
    columns = ["S(0)", "S(1)", "max S", "at α"] if path else ["S", "stderr", "L", "L+δ"]
    table = summary_table(title, ["dataset"], ["ρ", *columns, "saturated"])
    points = doc["results"]["points"]
    for dataset in doc["inputs"]["datasets"]:
        name = dataset["name"]
        for row in doc["summary"][name]:
            saturated = "[bold yellow]yes[/]" if row["saturated"] else "no"
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
            table.add_row(escape(name), f"{row['rho']:g}", *cells, saturated)
    return table


def warn_saturated(doc: dict, out: Console) -> None:
    """One warning per dataset and rho whose perturbed model is at chance somewhere."""
    from ..analyses.sharpness import saturation_advice
    from ..core.distributed import is_main

    if not is_main():
        return
    for name, rows in doc["summary"].items():
        for row in rows:
            if not row["saturated"]:
                continue
            where = _alphas_text(row["saturated_alphas"])
            why = saturation_advice(doc, name, row["rho"])
            out.print(
                f"[yellow]warning:[/] {escape(name)}: at rho={row['rho']:g} the perturbed model is "
                f"at chance (loss >= log C or accuracy within one standard error of 1/C){where}: "
                f"{why}"
            )


def _alphas_text(alphas: list) -> str:
    shown = [f"{a:g}" for a in alphas if a is not None]
    return f" at alpha {', '.join(shown)}" if shown else ""

"""``clipsharp demo``: build the tiny CLIP pairs on the bundled digits and analyse them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .interpolate import path_table
from .output import console, progress_bars


def command(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the data, checkpoints and reports (a cache).")
    ] = Path("clipsharp-demo"),
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild the models even if cached.")
    ] = False,
    alphas: opt.Alphas = "0:1:0.1",
    device: opt.Device = "auto",
    batch_size: opt.BatchSize = 128,
    seed: opt.Seed = 0,
) -> None:
    """Build tiny zero-shot and fine-tuned CLIPs on bundled digits, and analyse them.

    Runs interpolate on both pairs; needs no download.

    The first run trains the models (about a minute on 2 CPU cores) and
    caches them in --out.

    Example: clipsharp demo --out clipsharp-demo
    """
    from ..demo import build_demo
    from ..interpolation import run_interpolation
    from ..pipeline import open_workspace

    run = opt.run_options(
        image_column=None, label_column=None, classnames=None, limit=None, seed=seed,
        num_workers=0, device=device, batch_size=batch_size, precision="fp32",
        templates="openai", alphas=alphas,
    )  # fmt: skip
    say = console()
    reports_dir = out / "reports"
    with progress_bars(say) as progress:
        artifacts = build_demo(out, force=force, progress=progress, seed=seed)
        reports_dir.mkdir(parents=True, exist_ok=True)
        reports = {}
        for name, fine_tuned in artifacts.fine_tuned.items():
            workspace = open_workspace(
                {"zero_shot": artifacts.zero_shot, "fine_tuned": fine_tuned},
                opt.dataset_specs(str(artifacts.in_dist), [str(artifacts.shifted)]),
                data=run.data,
                evaluation=run.eval,
                progress=progress,
            )
            reports[name] = run_interpolation(workspace, run, progress=progress)
            reports[name].write(reports_dir / f"interpolate-{name}.json")
    built = "built" if artifacts.built else "reused from cache"
    say.print(f"demo models {built} in {out}")
    for name, report in reports.items():
        say.print(path_table(report.to_dict()), f"[dim]pair: zero-shot vs {name} fine-tune[/dim]")
        say.print(f"report: {reports_dir / f'interpolate-{name}.json'}")

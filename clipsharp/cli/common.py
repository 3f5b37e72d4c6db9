"""The dataset and evaluation options every analysis command takes, declared once.

``@analysis()`` adds them to a command's signature (so typer shows them and
clipsharp.toml can set them) and hands the command one :class:`Common` value
instead of fifteen parameters.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path

from . import options as opt


@dataclass(frozen=True)
class Common:
    """The shared options, as given."""

    id: str | None
    ood: list[str] | None
    model: str | None
    image_column: str | None
    label_column: str | None
    classnames: Path | None
    limit: int | None
    seed: int
    num_workers: int
    templates: str
    device: str
    batch_size: int
    precision: str
    format: str
    allow_nonfinite: bool
    show_config: bool

    def run_options(self, **path) -> opt.RunOptions:
        """Data, evaluation and path options; ``path`` holds alphas, exclude, ... as given."""
        return opt.run_options(
            image_column=self.image_column, label_column=self.label_column,
            classnames=self.classnames, limit=self.limit, seed=self.seed,
            num_workers=self.num_workers, device=self.device, batch_size=self.batch_size,
            precision=self.precision, templates=self.templates, **path,
        )  # fmt: skip

    def open(self, roles: dict, run: opt.RunOptions, progress):
        """The workspace of these checkpoints and the --id / --ood datasets."""
        from ..pipeline import open_workspace

        return open_workspace(
            roles, opt.dataset_specs(self.id, self.ood), data=run.data, evaluation=run.eval,
            model=self.model, allow_nonfinite=self.allow_nonfinite, progress=progress,
        )  # fmt: skip

    @property
    def form(self) -> str:
        """The checked ``--format``."""
        return opt.check_format(self.format)


# name -> (annotation, default), in the order --help lists them
SHARED = {
    "id": (opt.Id, None),
    "ood": (opt.Ood, None),
    "model": (opt.Model, None),
    "image_column": (opt.ImageColumn, None),
    "label_column": (opt.LabelColumn, None),
    "classnames": (opt.Classnames, None),
    "limit": (opt.Limit, None),
    "seed": (opt.Seed, 0),
    "num_workers": (opt.NumWorkers, 0),
    "templates": (opt.Templates, "openai"),
    "device": (opt.Device, "auto"),
    "batch_size": (opt.BatchSize, 128),
    "precision": (opt.Precision, "fp32"),
    "format": (opt.Format, "table"),
    "allow_nonfinite": (opt.AllowNonfinite, False),
    "show_config": (opt.ShowConfig, False),
}
assert list(SHARED) == [f.name for f in fields(Common)]


def analysis(**defaults):
    """Give a command ``def command(..., common: Common)`` the shared options as parameters.

    ``defaults`` overrides a shared default for this command (``limit=1024``).
    """

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "common"]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=kind,
                default=defaults.get(name, default),
            )  # fmt: skip
            for name, (kind, default) in SHARED.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs):
            common = Common(**{name: kwargs.pop(name) for name in SHARED})
            return command(**kwargs, common=common)

        keyword_own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        wrapper.__signature__ = signature.replace(parameters=[*keyword_own, *shared])
        return wrapper

    return decorate

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
    num_workers: int | None
    data_cache: Path | None
    templates: str
    head_classnames: Path | None
    device: str
    batch_size: int
    block_images: int | None
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
            precision=self.precision, templates=self.templates,
            head_classnames=self.head_classnames, data_cache=self.data_cache,
            block_images=self.block_images, **path,
        )  # fmt: skip

    def reading(self, roles: dict):
        """The ``Inputs`` of a run on these checkpoints and the --id / --ood datasets."""
        from ..pipeline import Inputs

        return Inputs(
            roles, tuple(opt.dataset_specs(self.id, self.ood)), model=self.model,
            allow_nonfinite=self.allow_nonfinite,
        )  # fmt: skip

    def inputs(self) -> list[tuple[str, str | Path | None]]:
        """``(what, path)`` of every file and folder these options make the run read."""
        from ..config import TEMPLATE_SETS
        from .output import dataset_inputs

        templates = None if self.templates in TEMPLATE_SETS else self.templates
        return [
            *dataset_inputs("--id", [self.id] if self.id else []),
            *dataset_inputs("--ood", self.ood or []),
            ("the --classnames file", self.classnames),
            ("the --templates file", templates),
            ("the --head-classnames file", self.head_classnames),
            ("the --model config", self.model),
        ]

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
    "num_workers": (opt.NumWorkers, None),
    "data_cache": (opt.DataCache, None),
    "templates": (opt.Templates, "openai"),
    "head_classnames": (opt.HeadClassnames, None),
    "device": (opt.Device, "auto"),
    "batch_size": (opt.BatchSize, 128),
    "block_images": (opt.BlockImages, None),
    "precision": (opt.Precision, "fp32"),
    "format": (opt.Format, "table"),
    "allow_nonfinite": (opt.AllowNonfinite, False),
    "show_config": (opt.ShowConfig, False),
}
assert list(SHARED) == [f.name for f in fields(Common)]


@dataclass(frozen=True)
class Measure:
    """The sharpness options, shared by ``sharpness`` and ``stragglers``."""

    kind: str
    rho: str
    iterations: int
    norm: str
    include_head: bool
    include_text: bool
    layers: str | None
    exclude: str | None

    def options(self):
        """The ``SharpnessOptions`` (``rho``: a comma list)."""
        from ..config import SharpnessOptions, parse_rhos

        return SharpnessOptions(
            kind=self.kind, rhos=parse_rhos(self.rho), iterations=self.iterations,
            norm=self.norm, include_head=self.include_head, include_text=self.include_text,
            exclude=self.exclude, layers=self.layers,
        )  # fmt: skip


MEASURE = {
    "kind": (opt.Kind, "average"),
    "rho": (opt.Rho, "1.0"),
    "iterations": (opt.Iterations, 20),
    "norm": (opt.Norm, "l2"),
    "include_head": (opt.IncludeHead, False),
    "include_text": (opt.IncludeText, False),
    "layers": (opt.Layers, None),
    "exclude": (opt.PerturbExclude, None),
}
assert list(MEASURE) == [f.name for f in fields(Measure)]
GROUPS = {"common": (Common, SHARED), "measure": (Measure, MEASURE)}  # parameter -> its options


def analysis(helps: dict[str, str] | None = None, **defaults):
    """Give a command the shared options of each group it asks for by parameter name.

    ``def command(..., *, common: Common)`` gets the dataset and evaluation options,
    ``measure: Measure`` the sharpness options: typer sees them as parameters (so
    --help lists them and clipsharp.toml can set them), the command receives one value
    per group. ``defaults`` overrides a shared default for this command (``limit=1024``),
    ``helps`` a shared option's help (``{"ood": "... Failure mode is judged on these."}``).
    """

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        groups = {name: GROUPS[name] for name in signature.parameters if name in GROUPS}
        own = [p for name, p in signature.parameters.items() if name not in groups]
        added = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=opt.with_help(kind, helps[name]) if name in (helps or {}) else kind,
                default=defaults.get(name, default),
            )  # fmt: skip
            for _, table in groups.values()
            for name, (kind, default) in table.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {
                group: cls(**{name: kwargs.pop(name) for name in table})
                for group, (cls, table) in groups.items()
            }
            return command(**kwargs, **values)

        keyword_own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        wrapper.__signature__ = signature.replace(parameters=[*keyword_own, *added])
        return wrapper

    return decorate

"""Typer parameters made from the options declarations, so that each option is declared once.

A command takes options dataclasses as keyword-only parameters
(``*, inputs: InputOptions, run: RunOptions``). :class:`Surface` replaces each by
one typer option per field declared with :func:`clipsharp.options.option` (nested
dataclasses such as ``RunOptions.path`` included), so --help lists them, clipsharp.toml
can set them and ``--show-config`` shows them; :meth:`Surface.grouped` builds the dataclasses
back from the values typer parsed. A parameter of the command's own annotated with an
``option()`` (``output: opt.Output = None``, see ``options.py``) becomes a typer parameter
the same way. ``@offer(...)`` tunes what one command offers, every key a dotted path from the
command's parameter: ``"fail_on"``, ``"run.path.exclude"``.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import typing
from collections.abc import Iterator
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Annotated, Any

import typer

from ..options import flag_of


@dataclass(frozen=True)
class Offer:
    """How one command offers the shared options; every key is the command's parameter, then
    the field path: ``"run.path.exclude"``, or ``"fail_on"`` for a parameter of its own."""

    omit: tuple[str, ...] = ()  # fields left at their default, not offered
    defaults: dict[str, Any] = field(default_factory=dict)  # a default of this command only
    helps: dict[str, str] = field(default_factory=dict)  # help worded for this command
    metavars: dict[str, str] = field(default_factory=dict)  # what to type, on this command


def offer(
    *omit: str,
    defaults: dict | None = None,
    helps: dict | None = None,
    metavars: dict | None = None,
):
    """Record how the decorated command offers its options (see :class:`Offer`)."""

    def record(command):
        command.offer = Offer(tuple(omit), defaults or {}, helps or {}, metavars or {})
        return command

    return record


@dataclass(frozen=True)
class Leaf:
    """One offered field: where it sits, and the typer parameter made for it."""

    path: tuple[str, ...]  # ("run", "path", "alphas")
    param: str  # the typer parameter's name: the flag without dashes ("alphas", "rho")
    parameter: inspect.Parameter


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (read once per class)."""
    return typing.get_type_hints(cls)


def is_options(annotation: Any) -> bool:
    """True for an options dataclass: one with a field the CLI offers, here or nested."""
    if not (isinstance(annotation, type) and is_dataclass(annotation)):
        return False
    return any(flag_of(f) or is_options(_hints(annotation)[f.name]) for f in fields(annotation))


def leaves(command) -> list[Leaf]:
    """Every field the command offers, in the order --help lists them; a clash of two flags
    of the same name is a bug of the command (omit one of them)."""
    found: list[Leaf] = []
    chosen = getattr(command, "offer", Offer())
    for name, cls in _groups(command).items():
        found += _leaves(cls, (name,), chosen)
    seen: dict[str, Leaf] = {}
    for leaf in found:
        if leaf.param in seen:
            raise TypeError(
                f"{command.__module__}: --{leaf.param} is offered by {'.'.join(leaf.path)} and "
                f"{'.'.join(seen[leaf.param].path)}; omit one with @offer(...)"
            )
        seen[leaf.param] = leaf
    return found


def _groups(command) -> dict[str, type]:
    """The command's options dataclasses, by parameter name."""
    signature = inspect.signature(command, eval_str=True)
    return {
        name: p.annotation for name, p in signature.parameters.items() if is_options(p.annotation)
    }


def _leaves(cls: type, path: tuple[str, ...], chosen: Offer) -> Iterator[Leaf]:
    hints = _hints(cls)
    for f in fields(cls):
        here = (*path, f.name)
        if ".".join(here) in chosen.omit:
            continue
        if flag_of(f) is not None:
            yield _leaf(here, f, hints[f.name], chosen)
        elif is_options(hints[f.name]):
            yield from _leaves(hints[f.name], here, chosen)


def _leaf(path: tuple[str, ...], f: Any, hint: Any, chosen: Offer, param: str = "") -> Leaf:
    """The typer parameter of one declared option: ``param`` names a command's own parameter
    (a dataclass field's parameter is named after its flag)."""
    flag, key = flag_of(f), ".".join(path)
    decls = flag.name or "--" + path[-1].replace("_", "-")
    param = param or decls.split("/")[0].lstrip("-").replace("-", "_")
    if keyword.iskeyword(param):  # --from: named after its field (from_report) instead
        param = path[-1]
    default = chosen.defaults.get(key, flag.text if flag.parse else f.default)
    shown = {
        "help": chosen.helps.get(key, flag.help),
        "metavar": chosen.metavars.get(key, flag.metavar),
    }
    if flag.argument:
        info = typer.Argument(**shown, show_default=False)
    else:
        names = (decls, flag.short) if flag.short else (decls,)
        info = typer.Option(*names, **shown, rich_help_panel=flag.panel)
    kind = _typed(hint, flag.parse is not None)
    default = inspect.Parameter.empty if default is MISSING else None if default == () else default
    return Leaf(
        path,
        param,
        inspect.Parameter(
            param, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info], default=default
        ),
    )


def declared(annotation: Any) -> Any:
    """The ``option()`` field an own parameter is annotated with, or None."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    found = [m for m in annotation.__metadata__ if isinstance(m, Field) and flag_of(m)]
    return found[0] if found else None


def _typed(hint: Any, parsed: bool) -> Any:
    """What typer parses: text for a parsed field, a list for a tuple, else the field's type."""
    if parsed:
        return str
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]] | None
    return hint


@dataclass(frozen=True)
class Surface:
    """A command as typer sees it, worked out once when the command is registered: its own
    parameters, then one per offered option; and the way back to its dataclasses."""

    own: tuple[inspect.Parameter, ...]  # the command's parameters that are not options groups
    groups: dict[str, type]  # parameter name -> options dataclass
    offered: tuple[Leaf, ...]

    @classmethod
    def of(cls, command) -> Surface:
        signature = inspect.signature(command, eval_str=True)
        chosen = getattr(command, "offer", Offer())
        own = tuple(
            _own(p, chosen) for p in signature.parameters.values() if not is_options(p.annotation)
        )
        return cls(own, _groups(command), tuple(leaves(command)))

    def parameters(self) -> list[inspect.Parameter]:
        return [*self.own, *(leaf.parameter for leaf in self.offered)]

    def grouped(self, values: dict[str, Any]) -> dict[str, Any]:
        """The command's arguments: its own values as given, the offered options built into
        their dataclasses (checked where they are made: a bad value is a ConfigError)."""
        offered = {leaf.path: leaf.param for leaf in self.offered}
        own = {name: value for name, value in values.items() if name not in offered.values()}
        for name, options in self.groups.items():
            own[name] = _build(options, (name,), offered, values)
        return own


def _own(p: inspect.Parameter, chosen: Offer) -> inspect.Parameter:
    """A parameter of the command's own, made from its ``option()``; one declared another
    way is a bug of the command."""
    f = declared(p.annotation)
    if f is None:
        raise TypeError(
            f"parameter {p.name!r} is not declared with option(): annotate it "
            "Annotated[TYPE, option(...)]"
        )
    return _leaf((p.name,), f, typing.get_args(p.annotation)[0], chosen, p.name).parameter


def _build(cls: type, path: tuple[str, ...], offered: dict, values: dict) -> Any:
    hints = _hints(cls)
    given = {}
    for f in fields(cls):
        here = (*path, f.name)
        if here in offered:
            given[f.name] = _value(f, values[offered[here]])
        elif flag_of(f) is None and is_options(hints[f.name]):
            given[f.name] = _build(hints[f.name], here, offered, values)
    return cls(**given)


def _value(f, raw: Any) -> Any:
    flag = flag_of(f)
    if flag.parse is not None and raw is not None:
        return flag.parse(str(raw))
    if isinstance(raw, list):
        return tuple(raw)
    if raw is None and f.default == ():
        return ()
    return raw


__all__ = ["Offer", "Surface", "leaves", "offer"]

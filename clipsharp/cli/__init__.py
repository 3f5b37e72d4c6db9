"""The ``clipsharp`` command line: one module per command, joined into one app.

torch and open_clip are imported inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
from inspect import Parameter, Signature
from pathlib import Path
from typing import Annotated

import typer
from typer import Abort
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..errors import ClipsharpError, ConfigError
from .params import Surface

# The click typer runs on (click itself, or in newer typers their own copy of it): its error
# classes, found from the public typer.BadParameter, so that no private module is imported.
_ERRORS = {kind.__name__: kind for kind in typer.BadParameter.__mro__}
UsageError, ClickException = _ERRORS["UsageError"], _ERRORS["ClickException"]


class OneLineUsage(TyperGroup):
    """Usage errors (an unknown flag, a missing argument, ``--limit abc``) as one line, exit 2.

    Help shows flags bare (``--resume``, not ``--resume <bool>``).
    """

    def get_params(self, ctx):
        return _bare_flags(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _bare_flags(command.get_params(ctx))
        return command

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as e:
            command = e.ctx.command_path if e.ctx else prog_name or "clipsharp"
            from .output import printable

            message = printable(" ".join(e.format_message().split()))
            typer.echo(f"{command}: error: {message.rstrip('.')}; see {command} --help", err=True)
            sys.exit(USAGE)
        except ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _bare_flags(params: list) -> list:
    """Flags take no value, so their help names no type."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """Help names the file a default comes from when clipsharp.toml sets it."""

    def format_help(self, ctx, formatter):
        found = (ctx.find_root().obj or {}).get("config")
        for param in self.get_params(ctx):
            if found and ctx.default_map and param.name in ctx.default_map:
                value = ctx.default_map[param.name]
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                param.show_default = f"{shown} from {found.name}"
        return super().format_help(ctx, formatter)


app = typer.Typer(
    cls=OneLineUsage,
    name="clipsharp",
    help="Why robust fine-tuning (WiSE-FT) of a CLIP model succeeds or fails: accuracy and "
    "loss along the interpolation path between zero-shot and fine-tuned weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

USAGE = 2
# errors of the user's file system (full, read-only, no permission), not bugs: exit 2
FILE_SYSTEM = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENAMETOOLONG,
}
INTERNAL_ERROR = 3
INTERRUPTED = 130  # 128 + SIGINT
TERMINATED = 143  # 128 + SIGTERM


def handle_errors(command):
    """The typer command of ``command``: its options dataclasses offered as flags (see
    ``params.py``). Expected errors: one line on stderr and exit 2. Ctrl-C: exit 130;
    SIGTERM, cleaned up alike: exit 143. Bugs: exit 3. Also serves ``--show-config`` for every
    command that has it.
    """
    from ..core.outputs import Terminated, terminate_as_interrupt
    from .output import check_stdout, printable

    surface = Surface.of(command)  # worked out once, not at every call

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, **kwargs):
        if kwargs.get("show_config"):
            _show_config(ctx)
            return None
        try:
            check_finite(ctx, kwargs)
            with terminate_as_interrupt():
                check_stdout(kwargs)
                return command(**surface.grouped(kwargs))
        except ClipsharpError as e:
            typer.echo(f"clipsharp {ctx.info_name}: error: {printable(str(e))}", err=True)
            raise typer.Exit(e.exit_code) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            typer.echo(f"clipsharp: {'terminated' if terminated else 'interrupted'}", err=True)
            raise typer.Exit(TERMINATED if terminated else INTERRUPTED) from None
        except Exception as e:
            if _debug(ctx):
                raise
            if isinstance(e, OSError) and e.errno in FILE_SYSTEM:
                where = f"{printable(str(e.filename))}: " if e.filename else ""
                typer.echo(
                    f"clipsharp {ctx.info_name}: error: {where}{e.strerror}; choose another "
                    "path or free some space",
                    err=True,
                )
                raise typer.Exit(USAGE) from None
            what = printable(f"{type(e).__name__}: {e}")
            typer.echo(
                f"clipsharp {ctx.info_name}: internal error: {what} "
                "(run with clipsharp --debug for the traceback, and please report it)",
                err=True,
            )
            raise typer.Exit(INTERNAL_ERROR) from None

    ctx_param = Parameter("ctx", Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    wrapper.__signature__ = Signature([ctx_param, *surface.parameters()])
    return wrapper


def check_finite(ctx: typer.Context, values: dict) -> None:
    """Refuse NaN and infinite values of float options (flags and clipsharp.toml alike)."""
    for param in ctx.command.params:
        value = values.get(param.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = max(param.opts, key=len)
            raise ConfigError(f"{flag} {value} is not a finite number; give a number like 0.5")


def _debug(ctx: typer.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or os.environ.get("CLIPSHARP_DEBUG") == "1"


def _show_config(ctx: typer.Context) -> None:
    """Print each option's resolved value and where it came from, as JSON on stdout."""
    resolved = {}
    for name, value in ctx.params.items():
        if name == "show_config":
            continue
        source = ctx.get_parameter_source(name)
        where = {"DEFAULT_MAP": "config file", "COMMANDLINE": "flag"}.get(
            source.name if source else "", "default"
        )
        resolved[name.replace("_", "-")] = {"value": _jsonable(value), "from": where}
    typer.echo(json.dumps({"command": ctx.info_name, "options": resolved}, indent=2))


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clipsharp {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of internal errors.")
    ] = False,
) -> None:
    """Load clipsharp.toml defaults for the command about to run."""
    from .config_file import default_map, find_config

    ctx.obj = {"debug": debug, "config": None}
    try:
        found = find_config(Path.cwd())
        if found:
            ctx.obj["config"] = found[0]
            commands = {
                name: {p.name: p for p in cmd.params} for name, cmd in ctx.command.commands.items()
            }
            ctx.default_map = default_map(found[1], commands, found[0])
    except ClipsharpError as e:
        from .output import printable

        typer.echo(f"clipsharp: error: {printable(str(e))}", err=True)
        raise typer.Exit(e.exit_code) from None


def _register() -> None:
    from . import (
        check,
        convert,
        demo,
        interpolate,
        layerwise,
        merge,
        plot,
        prune,
        sharpness,
        show,
        stragglers,
        study,
    )
    from . import inspect as inspection

    commands = {
        "interpolate": interpolate, "layerwise": layerwise, "sharpness": sharpness,
        "stragglers": stragglers, "prune": prune, "inspect": inspection, "demo": demo,
        "plot": plot, "study": study, "check": check, "convert": convert, "merge": merge,
        "show": show,
    }  # a table, aligned to read by column  # fmt: skip
    for name, module in commands.items():  # in the order --help lists them
        app.command(name, cls=Command)(handle_errors(module.command))


_register()


def main() -> None:
    """Console-script entry point."""
    from .output import hold_closed_streams

    hold_closed_streams()
    sys.exit(app(prog_name="clipsharp") or 0)

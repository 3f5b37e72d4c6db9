"""Defaults from ``clipsharp.toml`` (or ``[tool.clipsharp]`` in ``pyproject.toml``).

Keys are long option names (``batch-size = 256``, ``ood = ["data/shifted"]``);
a table per command (``[sharpness]``) overrides the top level; flags override
the file. The result is a click ``default_map``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from ..errors import ConfigError


def find_config(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The config table of ``folder``: clipsharp.toml first, else pyproject's [tool.clipsharp]."""
    own = folder / "clipsharp.toml"
    if own.is_file():
        return own, _read(own)
    project = folder / "pyproject.toml"
    if project.is_file():
        tool = _read(project).get("tool", {})
        _check_table(project, "tool", tool)
        table = tool.get("clipsharp")
        if table is not None:
            _check_table(project, "tool.clipsharp", table)
            return project, table
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove it") from e
    except RecursionError as e:  # tomllib recurses once per level of nested arrays or tables
        raise ConfigError(f"{path} is nested too deeply to read as TOML; fix or remove it") from e


def _check_table(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: {key} = {_toml(value)} is not a table; write [{key}] above its keys"
        )


def default_map(
    table: Mapping[str, Any], commands: Mapping[str, set[str]], source: Path
) -> dict[str, dict[str, Any]]:
    """Turn the config table into ``{command: {param_name: value}}``.

    ``commands`` maps each command name to its parameter names, or to its click
    parameters by name, whose types the values must then have. Unknown keys and
    values of the wrong type are errors naming ``source``, so a typo never goes
    unnoticed.
    """
    top = {k: v for k, v in table.items() if not isinstance(v, dict)}
    result: dict[str, dict[str, Any]] = {}
    for name, params in commands.items():
        chosen = {_param(k): v for k, v in top.items() if _param(k) in params}
        per_command = table.get(name, {})
        if isinstance(per_command, dict):
            for key, value in per_command.items():
                if _param(key) not in params:
                    raise ConfigError(f"{source}: [{name}] has no option {key!r}")
                chosen[_param(key)] = value
        if isinstance(params, Mapping):
            chosen = {key: check_type(source, key, v, params[key]) for key, v in chosen.items()}
        result[name] = chosen
    known = set().union(*commands.values()) if commands else set()
    for key, value in table.items():
        if isinstance(value, dict):
            if key not in commands:
                raise ConfigError(
                    f"{source}: [{key}] is not a clipsharp command; "
                    f"choose from {', '.join(commands)}"
                )
        elif _param(key) not in known:
            raise ConfigError(f"{source}: {key!r} is not an option of any clipsharp command")
    return result


# what a value of each kind of option must be: (test, what it is, an example)
KINDS = {
    "flag": (lambda v: isinstance(v, bool), "true or false", "true"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number", "8"),
    "number": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number", "0.5"),
    "path": (lambda v: isinstance(v, str), "a quoted path", '"data/shifted"'),
    "text": (lambda v: isinstance(v, str | int | float) and not isinstance(v, bool), "text", '"x"'),
}


def check_type(source: Path, name: str, value: Any, param: Any) -> Any:
    """The value for a repeatable option as a list; refused when of the wrong type for its
    option (``limit = true``), naming the file and the key."""
    kind = _kind(param)
    many = getattr(param, "multiple", False) or getattr(param, "nargs", 1) == -1
    key = name.replace("_", "-")
    if many and not isinstance(value, list):
        if not isinstance(value, str):
            raise ConfigError(
                f"{source}: {key} = {_toml(value)} should be a list of quoted "
                f'names, e.g. {key} = ["data/shifted"]'
            )
        value = [value]
    if kind is None:
        return value
    test, what, example = KINDS[kind]
    for item in value if many else [value]:
        if not test(item):
            raise ConfigError(
                f"{source}: {key} = {_toml(item)} is not {what}; write e.g. {key} = {example}"
            )
    return value


def _kind(param: Any) -> str | None:
    """The KINDS entry of a typer parameter, from its annotation (``int | None`` -> integer)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for _ in range(2):  # unwrap X | None, then list[X]
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            annotation = inner[0]
    names = {bool: "flag", int: "integer", float: "number", Path: "path", str: "text"}
    return names.get(annotation)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _param(key: str) -> str:
    return key.replace("-", "_")

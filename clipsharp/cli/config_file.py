"""Defaults from ``clipsharp.toml`` (or ``[tool.clipsharp]`` in ``pyproject.toml``).

Keys are long option names (``batch-size = 256``, ``ood = ["data/shifted"]``);
a table per command (``[sharpness]``) overrides the top level; flags override
the file. The result is a click ``default_map``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def find_config(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The config table of ``folder``: clipsharp.toml first, else pyproject's [tool.clipsharp]."""
    own = folder / "clipsharp.toml"
    if own.is_file():
        return own, _read(own)
    project = folder / "pyproject.toml"
    if project.is_file():
        table = _read(project).get("tool", {}).get("clipsharp")
        if table is not None:
            return project, table
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove it") from e


def default_map(
    table: Mapping[str, Any], commands: Mapping[str, set[str]], source: Path
) -> dict[str, dict[str, Any]]:
    """Turn the config table into ``{command: {param_name: value}}``.

    ``commands`` maps each command name to its parameter names. Unknown keys are
    errors, so a typo never goes unnoticed.
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


def _param(key: str) -> str:
    return key.replace("-", "_")

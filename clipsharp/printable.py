"""Text safe to print: control characters written as escapes.

Names that reach a terminal or a CI log come from files clipsharp does not control (a
report's dataset names, a dataset's class names, a checkpoint's keys). A control character
in one (ESC ``[2J``, ``]0;title``) would clear the screen, retitle the window or hide log
lines; :func:`printable` shows it as ``\\x1b`` instead. The CLI applies it to everything it
prints (``clipsharp/cli/output.py``), the figures to every string of a report.
"""

from __future__ import annotations

import re
from typing import Any

# C0 (tab and newline too), DEL and C1: what can move a terminal's cursor, clear its
# screen, retitle its window or hide a line of a log
CONTROL = re.compile("[\\x00-\\x1f\\x7f-\\x9f]")
CONTROL_BUT_NEWLINE = re.compile("[\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f]")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with each control character written as an escape (ESC as ``\\x1b``).

    ``lines``: newlines are kept (text of several lines); else a name stays on one line.

    Example:
        >>> printable("\\x1b[2Jshifted")
        '\\\\x1b[2Jshifted'
    """
    pattern = CONTROL_BUT_NEWLINE if lines else CONTROL
    return pattern.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def printable_strings(value: Any) -> Any:
    """``value`` (a report, as read) with every string in it, keys too, :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_strings(k): printable_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_strings(v) for v in value]
    return value

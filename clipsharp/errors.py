"""Expected errors: each one names the input at fault and the fix.

The CLI turns every :class:`ClipsharpError` into a one-line message on stderr
and exit code 2, without a traceback.
"""

from __future__ import annotations


class ClipsharpError(Exception):
    """Invalid input or usage. The message names the input and the fix."""

    exit_code = 2


class CheckpointError(ClipsharpError):
    """A checkpoint that cannot be read, is not a CLIP, or does not match its partner."""


class DatasetError(ClipsharpError):
    """A dataset that cannot be found, read, or used for classification."""


class ConfigError(ClipsharpError):
    """An option or configuration-file value that is out of range or unknown."""


class ReportError(ClipsharpError):
    """A report file that cannot be read or is not a clipsharp report."""

"""The merged model: theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned, written out.

The WiSE-FT model, in the inputs' own format: an open_clip safetensors file with its
architecture in the metadata, or, for transformers ``CLIPModel`` inputs, a folder that
``CLIPModel.from_pretrained`` loads (``config.json`` of the fine-tuned input,
``model.safetensors``). Alpha is given, or taken from an ``interpolate`` report: the best
alpha on its in-distribution set (choosing on an OOD set is choosing on the test set,
allowed only when asked for by name, and recorded as such).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.checkpoint import Checkpoint, check_made_on
from ..core.saving import check_target, save_like
from ..core.weights import interpolate_weights
from ..core.workspace import describe_checkpoints, open_checkpoints
from ..errors import ConfigError, ReportError
from ..files import file_sha256
from ..options import InputOptions, MergeOptions
from ..reports.report import Report, read_report

BEST = "best"  # --alpha best: from the --from report


@dataclass(frozen=True)
class AlphaChoice:
    """The alpha merged at, and where it came from."""

    alpha: float
    dataset: str | None = None  # the report's dataset it is the best alpha of; None: given
    role: str | None = None  # that dataset's role: "id", or "ood" (test-set selection)
    report: str | None = None  # the interpolate report it was read from
    report_sha256: str | None = None

    @property
    def on_test_set(self) -> bool:
        """Chosen on an out-of-distribution set: its accuracy there is no longer unbiased."""
        return self.role == "ood"

    def describe(self) -> str:
        if self.dataset is None:
            return "given"
        where = "OOD set (test-set selection)" if self.on_test_set else "in-distribution set"
        return f"best alpha on the {where} {self.dataset} of {self.report}"


@dataclass(frozen=True)
class Merged:
    """What ``merge`` wrote."""

    output: Path  # the file (open_clip) or folder (transformers)
    choice: AlphaChoice
    report: Report  # command "merge": the inputs, the format, the tensors, the files


def parse_alpha(text: str | float, extrapolate: bool = False) -> float | str:
    """``best``, or a number in [0, 1] (any finite number with ``extrapolate``)."""
    if str(text).strip().lower() == BEST:
        return BEST
    try:
        alpha = float(text)
    except ValueError as e:
        raise ConfigError(f"--alpha {text!r} is not a number; give 0.5, say, or best") from e
    if not math.isfinite(alpha):
        raise ConfigError(f"--alpha {text} is not a finite number; give 0.5, say, or best")
    if not (extrapolate or 0.0 <= alpha <= 1.0):
        raise ConfigError(
            f"--alpha {text} is outside [0, 1] (0: zero-shot, 1: fine-tuned); give a number "
            "in between, or add --extrapolate to go beyond the endpoints"
        )
    return alpha


def choose_alpha(
    report_path: Path, checkpoints: dict[str, Checkpoint], select_on: str | None = None
) -> AlphaChoice:
    """The best alpha of an ``interpolate`` report made on these checkpoints.

    Args:
        report_path: the report (``summary[dataset].best_alpha``).
        checkpoints: ``zero_shot`` and ``fine_tuned``; the sha256 the report records for
            each must be theirs.
        select_on: the dataset to choose on; default: the report's in-distribution set.
            An OOD set is allowed by name only, and the choice says so.
    """
    doc = read_report(report_path, "interpolate")
    check_made_on(
        doc, checkpoints, f"--from {report_path}", "give the report of this pair, or --alpha A"
    )
    roles = {d["name"]: d["role"] for d in doc["inputs"].get("datasets", [])}
    if select_on is None:
        ids = [name for name, role in roles.items() if role == "id"]
        if not ids:
            raise ReportError(
                f"--from {report_path} has no in-distribution (--id) set to choose alpha on; "
                "re-run interpolate with --id, or name a dataset with --select-on NAME "
                "(an OOD set means choosing on the test set)"
            )
        select_on = ids[0]
    summary = doc.get("summary", {}).get(select_on)
    if select_on not in roles or not isinstance(summary, dict) or "best_alpha" not in summary:
        raise ReportError(
            f"--select-on {select_on}: {report_path} has no summary of that dataset; "
            f"its datasets: {', '.join(roles) or 'none'}"
        )
    return AlphaChoice(
        alpha=float(summary["best_alpha"]),
        dataset=select_on,
        role=roles[select_on],
        report=str(report_path),
        report_sha256=file_sha256(report_path),
    )


def merge(
    zero_shot: str | Path,
    fine_tuned: str | Path,
    output: str | Path,
    options: MergeOptions,
    inputs: InputOptions | None = None,
) -> Merged:
    """Write theta(alpha) = (1 - alpha) * zero_shot + alpha * fine_tuned in the fine-tuned
    checkpoint's format, with the provenance in its metadata.

    Args:
        zero_shot, fine_tuned: checkpoints (open_clip safetensors or transformers folders).
        output: the safetensors file (open_clip) or the folder (transformers) to write.
        options: ``alpha`` in [0, 1] (outside with ``extrapolate``), or ``"best"`` to take
            it from ``from_report``, an ``interpolate`` report of this pair, on its
            in-distribution set or the dataset ``select_on``.
        inputs: how to read the checkpoints (``model``, ``allow_nonfinite``); its datasets
            are not used.

    Example:
        >>> merge("zs.safetensors", "ft.safetensors", "wise-ft.safetensors", MergeOptions("0.5"))
    """
    started = time.perf_counter()
    inputs = inputs or InputOptions()
    requested = parse_alpha(options.alpha, options.extrapolate)
    _check_alpha_source(requested, options.from_report, options.select_on)
    roles = {"zero_shot": Path(zero_shot), "fine_tuned": Path(fine_tuned)}
    loaded, arch, _ = open_checkpoints(
        roles, model=inputs.model, allow_nonfinite=inputs.allow_nonfinite
    )
    if requested == BEST:
        choice = choose_alpha(Path(options.from_report), loaded, options.select_on)
        if not (options.extrapolate or 0.0 <= choice.alpha <= 1.0):
            raise ConfigError(
                f"the best alpha of --from {options.from_report} is {choice.alpha:g}, outside "
                "[0, 1] (the report extrapolated); add --extrapolate to merge there"
            )
    else:
        choice = AlphaChoice(requested)
    source = loaded["fine_tuned"]
    output = Path(output)
    check_target(output, source.format)
    merged = interpolate_weights(loaded["zero_shot"].tensors, source.tensors, choice.alpha)
    files = save_like(output, merged, source, arch, provenance(loaded, choice))
    report = Report(
        command="merge",
        inputs=describe_checkpoints(loaded, arch),
        config={
            "alpha": requested,
            "from": None if options.from_report is None else str(options.from_report),
            "select_on": options.select_on,
            "extrapolate": options.extrapolate,
            "output": str(output),
            "format": source.format,
        },
        results={"files": [str(path) for path in files]},
        summary={
            "alpha": choice.alpha,
            "selection": choice.describe(),
            "dataset": choice.dataset,
            "test_set_selection": choice.on_test_set,
            "tensors": len(merged),
            "output": str(output),
            "format": source.format,
        },
        seconds=time.perf_counter() - started,
    )
    return Merged(output, choice, report)


def _check_alpha_source(alpha, from_report, select_on) -> None:
    if alpha == BEST and from_report is None:
        raise ConfigError("--alpha best needs --from REPORT, an interpolate report of this pair")
    if alpha != BEST and (from_report is not None or select_on is not None):
        flag = "--from" if from_report is not None else "--select-on"
        raise ConfigError(f"{flag} is for --alpha best; with --alpha {alpha:g} leave it out")


def provenance(checkpoints: dict[str, Checkpoint], choice: AlphaChoice) -> dict[str, str]:
    """The metadata that says how the merged model was made (values are strings)."""
    zero_shot, fine_tuned = checkpoints["zero_shot"], checkpoints["fine_tuned"]
    parameters: dict[str, Any] = asdict(choice) | {"clipsharp_version": __version__}
    return {
        "clipsharp.operation": "merge",
        "clipsharp.alpha": repr(choice.alpha),
        "clipsharp.alpha_selection": choice.describe(),
        "clipsharp.zero_shot": zero_shot.path.name,
        "clipsharp.zero_shot_sha256": zero_shot.sha256,
        "clipsharp.source": fine_tuned.path.name,
        "clipsharp.source_sha256": fine_tuned.sha256,
        "clipsharp.parameters": json.dumps(parameters, sort_keys=True),
    }

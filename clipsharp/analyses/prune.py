"""Magnitude pruning of chosen layers of a fine-tuned checkpoint (the paper's Figure 5).

Within each chosen layer group, per tensor, the fraction ``sparsity`` of entries
with the smallest magnitude is pruned: set to zero (``target="weights"``), or
returned to the zero-shot value (``target="task-vector"``, which ranks the
entries of tau = ft - zs). Matrices only, unless ``include_vectors``. The
count of pruned entries is round(sparsity * numel), chosen as
``torch.nn.utils.prune.l1_unstructured`` chooses them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .. import __version__
from ..core import distributed
from ..core.analysis import files_read, write_report
from ..core.checkpoint import Checkpoint
from ..core.layers import layer_groups, select_layers
from ..core.models import Architecture
from ..core.outputs import Paths, check_folder, check_output, check_paths, uninterrupted
from ..core.saving import check_target, discard, save_like
from ..core.saving import commit as move
from ..core.workspace import Inputs, Workspace, describe_checkpoints, open_checkpoints
from ..errors import ClipsharpError, ConfigError, ReportError
from ..files import is_stream
from ..options import PruneOptions, RunOptions
from ..progress import Progress
from ..reports.report import Report, read_report
from .interpolate import run_interpolation


def prune_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask of the round(sparsity * n) entries of smallest |score| (True = pruned)."""
    count = round(sparsity * scores.numel())
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if count:
        smallest = torch.topk(scores.detach().abs().flatten().float(), count, largest=False)
        mask[smallest.indices] = True
    return mask.view_as(scores)


def prune_tensors(
    fine_tuned: Checkpoint,
    layers: Sequence[str],
    options: PruneOptions,
    zero_shot: Checkpoint | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The pruned state_dict (other tensors shared, unchanged) and a row per pruned tensor."""
    if options.target == "task-vector" and zero_shot is None:
        raise ConfigError("--target task-vector needs the zero-shot checkpoint: --zero-shot FILE")
    groups = layer_groups(fine_tuned.tensors)
    tensors = dict(fine_tuned.tensors)
    rows = []
    for layer in layers:
        for key in groups[layer]:
            weight = tensors[key]
            if not weight.is_floating_point() or (weight.ndim < 2 and not options.include_vectors):
                continue
            tensors[key], row = _prune_one(key, weight, options, zero_shot)
            rows.append({"layer": layer, **row})
    return tensors, rows


def _prune_one(key, weight, options, zero_shot) -> tuple[torch.Tensor, dict]:
    if options.target == "weights":
        mask = prune_mask(weight, options.sparsity)
        pruned = weight.masked_fill(mask, 0)
    else:
        base = zero_shot.tensors[key]
        mask = prune_mask(weight.float() - base.float(), options.sparsity)
        pruned = torch.where(mask, base, weight)
    row = {"key": key, "numel": weight.numel(), "pruned": int(mask.sum())}
    row["sparsity"] = row["pruned"] / row["numel"]
    return pruned, row


def layers_from_report(path: Path) -> list[str]:
    """The straggler layers of a ``stragglers`` report (``summary.stragglers``)."""
    doc = read_report(path)
    if doc.get("command") != "stragglers":
        raise ReportError(
            f"--from {path} is a {doc.get('command')!r} report; give a stragglers report"
        )
    stragglers = doc.get("summary", {}).get("stragglers")
    if not isinstance(stragglers, list):
        raise ReportError(f"--from {path} has no summary.stragglers list; is it complete?")
    return [s["layer"] if isinstance(s, dict) else str(s) for s in stragglers]


def choose_layers(fine_tuned: Checkpoint, options: PruneOptions) -> list[str]:
    """Layers from ``--layers`` (names or globs) or ``--from`` a stragglers report."""
    spec, from_report = options.layers, options.from_report
    if (spec is None) == (from_report is None):
        raise ConfigError("give the layers to prune with exactly one of --layers and --from")
    names = list(layer_groups(fine_tuned.tensors))
    if spec is not None:
        return select_layers(names, spec)
    chosen = layers_from_report(from_report)
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise ConfigError(
            f"--from {from_report} names layer {unknown[0]!r}, which {fine_tuned.path} lacks; "
            "was the report made for this checkpoint?"
        )
    return chosen  # may be empty: a model without stragglers is written back unpruned


def pruned_provenance(
    fine_tuned: Checkpoint,
    layers: Sequence[str],
    options: PruneOptions,
    zero_shot: Checkpoint | None,
) -> dict[str, str]:
    """The metadata that says how the pruned checkpoint was made (values are strings)."""
    metadata = {
        "clipsharp.operation": "prune",
        "clipsharp.source": fine_tuned.path.name,
        "clipsharp.source_sha256": fine_tuned.sha256,
    }
    if zero_shot is not None and options.target == "task-vector":
        metadata["clipsharp.zero_shot_sha256"] = zero_shot.sha256
    parameters = {"layers": list(layers), **_how(options), "clipsharp_version": __version__}
    return metadata | {"clipsharp.parameters": json.dumps(parameters)}


def _how(options: PruneOptions) -> dict:
    """The options that say how the layers are pruned (the layers are recorded as chosen)."""
    return {k: v for k, v in asdict(options).items() if k not in ("layers", "from_report")}


def run_prune(
    checkpoints: dict[str, Checkpoint], arch: Architecture, output: Path, options: PruneOptions
) -> tuple[Report, Checkpoint]:
    """Prune the chosen layers of ``checkpoints["fine_tuned"]`` and write ``output``.

    ``checkpoints`` may hold the ``zero_shot`` one too (needed by ``task-vector``). Returns
    the report (``results.tensors``, ``summary`` of what changed) and the pruned checkpoint,
    in memory, for a before/after evaluation.
    """
    started = time.perf_counter()
    source, base = checkpoints["fine_tuned"], checkpoints.get("zero_shot")
    chosen = choose_layers(source, options)
    tensors, rows = prune_tensors(source, chosen, options, base)
    if distributed.is_main():  # under torchrun, one writer
        save_like(output, tensors, source, arch, pruned_provenance(source, chosen, options, base))
    pruned = Checkpoint(path=output, tensors=tensors, metadata={})
    report = Report(
        command="prune",
        inputs=describe_checkpoints(checkpoints, arch),
        config={
            **_how(options),
            "layers": chosen,
            "output": str(output),
            "format": source.format,
        },
        results={"tensors": rows},
        summary={
            "layers": chosen,
            "tensors": len(rows),
            "pruned": sum(r["pruned"] for r in rows),
            "numel": sum(r["numel"] for r in rows),
        },
        seconds=time.perf_counter() - started,
    )
    return report, pruned


def add_before_and_after(
    report: Report, workspace: Workspace, pruned: Checkpoint, options: RunOptions, progress=None
) -> None:
    """Measure the path zero-shot -> fine-tuned and zero-shot -> pruned into ``report``:
    ``results.before/after`` (the paths), ``summary.before/after``, ``inputs.datasets``."""
    after_pair = {"zero_shot": workspace.checkpoints["zero_shot"], "fine_tuned": pruned}
    after_workspace = replace(workspace, checkpoints=after_pair)
    with workspace.restoring():  # the "after" run leaves the pruned weights in the model
        before = run_interpolation(workspace, options, progress=progress)
        after = run_interpolation(after_workspace, options, progress=progress)
    report.results |= {"before": before.results["path"], "after": after.results["path"]}
    report.summary |= {"before": before.summary, "after": after.summary}
    report.inputs["datasets"] = before.inputs["datasets"]
    report.config["alphas"] = before.config["alphas"]


def prune(
    inputs: Inputs,
    output: str | Path,
    options: PruneOptions,
    run: RunOptions | None = None,
    *,
    report: str | Path | None = None,
    progress: Progress | None = None,
    reads: Paths = (),
) -> Report:
    """The ``prune`` command: prune, write the checkpoint in the fine-tuned checkpoint's own
    format and its report, and, with datasets and a zero-shot checkpoint, measure the path
    before and after.

    Args:
        inputs: ``{"fine_tuned": path}``, with ``"zero_shot"`` for ``task-vector`` and for
            the before/after measurement of the datasets (measured only with it).
        output: the pruned checkpoint, in the fine-tuned checkpoint's format: a safetensors
            file (open_clip) or a folder (transformers); the report records it.
        options: the layers (``layers`` or ``from_report``) and how they are pruned.
        run: data, evaluation and path options of the measurement.
        report: the report's file (None or ``-``: returned only, not written).
        reads: other files the run reads (``(what, path)``), which no output may be.

    Before any work, ``output`` and ``report`` are checked: writable, and not an input. The
    checkpoint is staged beside ``output`` (``.NAME.pending``) and moved there once the
    report is written, signals held meanwhile: an error, Ctrl-C or SIGTERM leaves both or
    neither. Under torchrun the main process writes them.

    Example:
        >>> inputs = Inputs.of({"fine_tuned": "ft.safetensors"}, InputOptions())
        >>> prune(inputs, "pruned.safetensors", PruneOptions(layers="visual.block.11"),
        ...       report="prune.json")
    """
    run = run or RunOptions()
    output = Path(output)
    _check_outputs(inputs, output, report, options, run, reads)
    staged = output.with_name(f".{output.name}.pending")  # moved to output with the report
    try:
        result = _pruned(inputs, output, staged, options, run, progress)
        if distributed.is_main():  # the writer: another rank leaves the files be
            with uninterrupted():
                write_report(result, report)
                commit(staged, output, report)
    finally:
        if distributed.is_main():
            discard(staged)
    return result


def _check_outputs(inputs: Inputs, output: Path, report, options, run, reads) -> None:
    """Before any work: both outputs can be written, and neither is an input."""
    if output.is_dir():  # a transformers folder (its format is checked once it is read)
        check_folder(output, "-o")
    else:
        check_output(str(output))
    check_output(None if report is None else str(report), "--report")
    check_paths(
        [("-o", output), ("--report", report), ("--data-cache", run.data.cache_dir)],
        files_read(inputs, run, [("the --from report", options.from_report), *reads]),
    )


def _pruned(
    inputs: Inputs, output: Path, staged: Path, options: PruneOptions, run: RunOptions, progress
) -> Report:
    """The pruned checkpoint written to ``staged`` and its report (which names ``output``)."""
    workspace = None
    if inputs.specs and "zero_shot" in inputs.checkpoints:
        workspace = inputs.open(run.data, run.eval, progress)
        loaded, arch = workspace.checkpoints, workspace.arch
    else:
        loaded, arch, _ = open_checkpoints(
            inputs.checkpoints, model=inputs.model, allow_nonfinite=inputs.allow_nonfinite
        )
    check_target(output, loaded["fine_tuned"].format)
    report, pruned = run_prune(loaded, arch, staged, options)
    report.config["output"] = str(output)
    if workspace is not None:
        add_before_and_after(report, workspace, pruned, run, progress)
    return report


def commit(staged: Path, output: Path, report: str | Path | None) -> None:
    """Move the staged checkpoint to ``output`` once its report is written; if it cannot be
    moved, the report is removed: no report without its checkpoint."""
    try:
        move(staged, output)
    except ClipsharpError:
        if report not in (None, "-") and not is_stream(report):
            Path(report).unlink(missing_ok=True)
        raise

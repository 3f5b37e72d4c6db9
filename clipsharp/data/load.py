"""Datasets: a spec ``SOURCE[:SPLIT]`` becomes labels, class names and streamed images (§1).

SOURCE is tried as, in order: a folder written by ``save_to_disk``; any other folder (an image
folder ``class_name/*.png``, or data files laid out as on the hub); a parquet / arrow / json /
jsonl / csv file or a glob of them; a HuggingFace hub name. ``datasets`` is imported inside
functions because it is slow to import. Opening a dataset reads its labels and checks it; the
images are decoded later, a batch at a time, by the engine (see ``stream.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..options import DataOptions, auto_workers
from .classnames import ClassNames, indexed_classes, is_list, named_classes, read_classnames
from .sources import dataset_error, open_source, quiet_datasets
from .specs import DatasetSpec, display_name, unique_names
from .stream import ImageSource, ImageTransform, Transform, unreadable
from .webdataset import TEMPLATES

if TYPE_CHECKING:
    import datasets

PREFERRED_SPLITS = ("test", "validation")  # without :SPLIT and several splits, the first found
LABEL_NAMES = ("label", "labels")  # integer or string columns taken as labels without ClassLabel


@dataclass
class EvalData:
    """One dataset, checked and ready for the engine: labels in memory, images streamed."""

    name: str  # short display name, unique among the datasets of a run
    spec: DatasetSpec
    split: str  # the split actually used
    images: ImageSource  # decoded on demand, a batch at a time (never held whole)
    labels: torch.Tensor  # (N,) int64 in [0, num_classes)
    classes: ClassNames  # the class names, their source and their ImageNet identity
    fingerprint: str  # hex digest of source content, split, columns, subset and transform
    notes: tuple[str, ...] = ()  # what opening it found worth saying (stderr and report)
    templates: tuple[str, ...] | None = None  # its own prompt templates (a webdataset's)
    skipped: tuple[str, ...] = ()  # images left out by --skip-bad-images, and why

    @property
    def classnames(self) -> list[str]:
        return self.classes.names

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def describe(self) -> dict:
        """The dataset's entry in a report."""
        return {
            "name": self.name,
            "spec": self.spec.text,
            "role": self.spec.role,
            "split": self.split,
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint,
            **self.classes.describe(),
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"templates": f"the dataset's {TEMPLATES}"} if self.templates else {}),
            **({"skipped_images": skipped_entry(self.skipped)} if self.skipped else {}),
            "decoder": self.images.decoder,
        }

    def load_images(self, batch_size: int = 64) -> torch.Tensor:
        """(N, 3, H, W) float32 through the whole transform, all in memory at once.

        For small sets and tests only: the engine streams the images instead.
        """
        whole = range(self.num_examples)
        transform = self.images.transform
        parts = [
            transform.finish(batch, torch.device("cpu"), torch.float32)
            for batch in self.images.batches(whole, batch_size)
        ]
        return torch.cat(parts)


def load_all(
    specs: list[DatasetSpec],
    transform: Transform,
    options: DataOptions,
    *,
    device: torch.device | None = None,
) -> list[EvalData]:
    """Open every spec, each (source, split) once, under names made unique by `unique_names`.

    Every dataset is opened and checked (split, columns, labels); no image is decoded here.
    ``device`` is where the model runs: it sets the default worker count and, with
    ``--decode cuda``, where JPEGs are decoded.
    """
    plans: dict[tuple[str, str | None], _Plan] = {}
    for spec in specs:
        if (spec.source, spec.split) not in plans:
            plans[(spec.source, spec.split)] = _plan(spec, options)
    loaded = {key: _finish(plan, transform, options, device) for key, plan in plans.items()}
    return [
        replace(loaded[(spec.source, spec.split)], name=name, spec=spec)
        for spec, name in zip(specs, unique_names(specs), strict=True)
    ]


def load_eval_data(spec: DatasetSpec, transform: Transform, options: DataOptions) -> EvalData:
    """Open one dataset split, choose its columns and subset; its images stream later.

    Args:
        spec: the dataset and split to read.
        transform: the model's eval transform, PIL image (RGB) -> (3, H, W) tensor.
        options: columns, class names file, ``limit`` and ``seed``, workers, data cache.

    Raises:
        DatasetError: the dataset cannot be found or read, or is unfit for classification.
    """
    return _finish(_plan(spec, options), transform, options, None)


def decode_device(decode: str, device: torch.device | None) -> torch.device | None:
    """Where ``--decode`` puts JPEG decoding: None for PIL in the workers, else the GPU the
    model runs on. ``--decode cuda`` without one is refused (ConfigError)."""
    if decode == "cpu":
        return None
    if not torch.cuda.is_available():
        raise ConfigError(
            "--decode cuda needs a CUDA GPU and none is visible to torch; use --decode cpu"
        )
    if device is None or device.type != "cuda":
        raise ConfigError(
            f"--decode cuda decodes on the GPU the model runs on, but --device is "
            f"{device or 'cpu'}; give --device cuda or --decode cpu"
        )
    return device


@dataclass(frozen=True)
class _Plan:
    """A dataset opened and checked, its images not yet decoded."""

    spec: DatasetSpec
    split: str
    dataset: datasets.Dataset  # the subset of the split
    image_column: str
    rows: np.ndarray  # (N,) row of each example in the split
    base_dir: Path | None  # where relative image paths start
    labels: torch.Tensor  # (N,) int64
    classes: ClassNames
    identity: list[str]  # what the fingerprint covers, besides the transform
    notes: tuple[str, ...]  # see EvalData
    templates: tuple[str, ...] | None


def _plan(spec: DatasetSpec, options: DataOptions) -> _Plan:
    with quiet_datasets():
        opened = open_source(spec)
        split = _choose_split(spec, sorted(opened.splits))
        whole = _images_from_structs(opened.splits[split])
        if len(whole) == 0:
            raise dataset_error(spec, f"split {split!r} has no examples")
        image_column, label_column = _columns(spec, whole, options)
        rows = _subset(len(whole), options)
        dataset = whole.select(rows)
        labels, classes = _labels(spec, dataset, label_column, options.classnames)
    subset = [] if options.limit is None else [str(options.limit), str(options.seed)]
    identity = [whole._fingerprint, split, image_column, label_column]
    identity += [json.dumps(classes.names), *subset]
    notes = tuple(opened.notes.get(split, ()))
    templates = tuple(opened.templates) if opened.templates else None
    return _Plan(
        spec,
        split,
        dataset,
        image_column,
        rows,
        opened.base_dir,
        labels,
        classes,
        identity,
        notes,
        templates,
    )


def _finish(plan: _Plan, transform: Transform, options: DataOptions, device) -> EvalData:
    images = _images(plan, transform, options, device)
    skipped: tuple[str, ...] = ()
    if options.skip_bad_images:
        plan, skipped = _without_bad_images(plan, images)
        images = _images(plan, transform, options, device) if skipped else images
    name = display_name(plan.spec)
    return EvalData(
        name,
        plan.spec,
        plan.split,
        images,
        plan.labels,
        plan.classes,
        images.fingerprint,
        plan.notes,
        plan.templates,
        skipped,
    )


def _without_bad_images(plan: _Plan, images: ImageSource) -> tuple[_Plan, tuple[str, ...]]:
    """The plan without the examples whose image cannot be decoded (each decoded once)."""
    bad = unreadable(images)
    if not bad:
        return plan, ()
    if len(bad) == len(plan.rows):
        raise dataset_error(plan.spec, f"none of its {len(bad)} images can be read: {bad[0][1]}")
    keep = np.ones(len(plan.rows), dtype=bool)
    keep[[position for position, _ in bad]] = False
    kept = np.flatnonzero(keep)
    identity = [*plan.identity, "skipped", *(str(plan.rows[p]) for p, _ in bad)]
    return replace(
        plan,
        dataset=plan.dataset.select(kept),
        rows=plan.rows[kept],
        labels=plan.labels[torch.from_numpy(kept)],
        identity=identity,
    ), tuple(why for _, why in bad)


def skipped_entry(skipped: tuple[str, ...]) -> dict:
    """The report's account of the images --skip-bad-images left out: count, first ten."""
    return {"count": len(skipped), "first": list(skipped[:10])}


def _images(plan: _Plan, transform: Transform, options: DataOptions, device) -> ImageSource:
    import datasets

    decoder = decode_device(options.decode, device)
    # PIL's pixels keep the fingerprint they always had; another decoder's differ slightly
    decoded_by = [] if decoder is None else [f"decode={options.decode}"]
    fingerprint = _digest([*plan.identity, repr(transform), *decoded_by])
    gpu = device is not None and device.type == "cuda"
    workers = auto_workers(gpu=gpu) if options.num_workers is None else options.num_workers
    dataset = plan.dataset.select_columns([plan.image_column])
    if isinstance(dataset.features[plan.image_column], datasets.Image):
        # decoded by the stream, which then knows the file a bad image came from
        dataset = dataset.cast_column(plan.image_column, datasets.Image(decode=False))
    return ImageSource(
        describe=plan.spec.text,
        dataset=dataset,
        column=plan.image_column,
        rows=plan.rows,
        base_dir=plan.base_dir,
        transform=ImageTransform.split(transform),
        fingerprint=fingerprint,
        num_workers=workers,
        cache_dir=options.cache_dir,
        decode_device=decoder,
    )


# ---- split, columns, labels ----------------------------------------------------------------


def _choose_split(spec: DatasetSpec, splits: list[str]) -> str:
    """The split named, else the only one, else test, else validation."""
    listed = ", ".join(splits) or "none"
    if spec.split is not None and spec.split not in splits:
        raise dataset_error(spec, f"has no split {spec.split!r}; its splits are {listed}")
    if spec.split is not None or len(splits) == 1:
        return spec.split or splits[0]
    for name in PREFERRED_SPLITS:
        if name in splits:
            return name
    raise dataset_error(
        spec, f"has splits {listed}, none test or validation; choose one as {spec.source}:SPLIT"
    )


def _images_from_structs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Columns of ``{"bytes", "path"}`` structs, as pandas and HF write images to parquet
    without their Image feature, read as images."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, dict) and set(feature) == {"bytes", "path"}:
            dataset = dataset.cast_column(name, datasets.Image())
    return dataset


def _columns(spec: DatasetSpec, dataset: datasets.Dataset, options: DataOptions) -> tuple[str, str]:
    """The image column and the label column: as given, or the one of their kind."""
    import datasets

    features = dataset.features
    images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    labels = labels or [n for n in LABEL_NAMES if n in features and _is_label_value(features[n])]
    if not labels and not options.label_column and dataset.info.builder_name == "imagefolder":
        raise dataset_error(
            spec,
            "is an image folder with a single class folder, so it has no labels; an image "
            "folder needs one sub-folder per class (SOURCE/class_name/*.png)",
        )
    image = _column(spec, features, options.image_column, images, "--image-column", "Image")
    label = _column(spec, features, options.label_column, labels, "--label-column", "ClassLabel")
    if not isinstance(features[image], datasets.Image) and not _is_string(features[image]):
        raise dataset_error(spec, f"column {image!r} holds neither images nor file paths")
    return image, label


def _column(spec, features, given: str | None, found: list[str], flag: str, kind: str) -> str:
    columns = ", ".join(features)
    if given and given not in features:
        raise dataset_error(spec, f"has no column {given!r} ({flag}); its columns are {columns}")
    if given or len(found) == 1:
        return given or found[0]
    if not found:
        raise dataset_error(
            spec, f"has no {kind} column (columns: {columns}); name one with {flag}"
        )
    raise dataset_error(
        spec, f"has several {kind} columns ({', '.join(found)}); choose with {flag}"
    )


def _is_string(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _is_label_value(feature: Any) -> bool:
    return _is_string(feature) or str(getattr(feature, "dtype", "")).startswith(("int", "uint"))


def _labels(
    spec: DatasetSpec, dataset: datasets.Dataset, column: str, option: str | Path | None
) -> tuple[torch.Tensor, ClassNames]:
    """(N,) int64 class indices, and the class names they index (see ``classnames.py``)."""
    import datasets

    feature = dataset.features[column]
    values = dataset.with_format("arrow")[column].to_pylist()
    if any(value is None for value in values):
        raise dataset_error(spec, f"column {column!r} has missing labels")
    try:
        if _is_string(feature):
            values, classes = _string_labels(spec, values, option)
        elif isinstance(feature, datasets.ClassLabel):
            folders = dataset.info.builder_name == "imagefolder"
            what = "folders" if folders else "ClassLabel names"
            classes = named_classes(list(feature.names), option, what)
        elif not _is_label_value(feature):
            raise dataset_error(
                spec, f"column {column!r} holds no class labels; choose --label-column"
            )
        elif option is None:
            raise dataset_error(
                spec, f"has integer labels in {column!r}; give class names with --classnames"
            )
        else:
            classes = indexed_classes(option)
    except DatasetError as e:
        if str(e).startswith("dataset "):
            raise
        raise dataset_error(spec, str(e)) from e
    labels = torch.tensor(values, dtype=torch.int64)
    _check_range(spec, labels, classes, column)
    return labels, classes


def _string_labels(
    spec: DatasetSpec, values: list[str], option: str | Path | None
) -> tuple[list[int], ClassNames]:
    """Label strings: the classes are their sorted values, or a FILE's names in its order."""
    if option is None or is_list(option):
        names = sorted(set(values))
        classes = named_classes(names, option, "label values")
        index = {name: i for i, name in enumerate(names)}
        return [index[value] for value in values], classes
    given = read_classnames(option)
    index = {name: i for i, name in enumerate(given)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise dataset_error(spec, f"has label {unknown[0]!r}, not in --classnames {option}")
    return [index[value] for value in values], ClassNames(given, f"--classnames {option}")


def _check_range(spec: DatasetSpec, labels: torch.Tensor, classes: ClassNames, column: str):
    bad = labels[(labels < 0) | (labels >= len(classes.names))]
    if len(bad):
        raise dataset_error(
            spec,
            f"has label {int(bad[0])} outside [0, {len(classes.names)}), the class names of "
            f"{classes.source}; expected one name per label value: are these the right "
            "class names, or is this split unlabelled?",
        )


def _subset(num_rows: int, options: DataOptions) -> np.ndarray:
    """Row indices kept: all, or ``limit`` of them drawn by ``seed``, sorted."""
    if options.limit is None or options.limit >= num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(options.seed).permutation(num_rows)[: options.limit])


def _digest(parts: list[str]) -> str:
    """First 16 hex digits of a sha256; memory addresses in reprs are dropped."""
    text = "\0".join(re.sub(r" at 0x[0-9a-fA-F]+", "", part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

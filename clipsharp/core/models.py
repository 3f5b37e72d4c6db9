"""Architectures, open_clip model builds, and the classifier being evaluated.

The architecture of a checkpoint is found, in this order: ``--model`` (an
open_clip name or a config JSON file), the safetensors metadata
(``clipsharp.model`` or ``clipsharp.model_config``), an
``open_clip_config.json`` beside the file, and last the shapes of its tensors
(a standard ViT CLIP, ``shapes.py``; named when it equals one of open_clip's
configs). Models are built from the config dict (never through a global
registry) and filled from the checkpoint. An image-tower-only checkpoint gives
a model without the text members it lacks (``drop_absent_text``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError, DatasetError
from ..progress import Event, Progress
from .checkpoint import Checkpoint, has_text_tower
from .shapes import ReadConfig, read_config

HEAD_KEYS = ("head.weight", "head.bias")
SCALE_KEYS = ("logit_scale", "logit_bias")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NO_TEXT_TOWER = (
    "{what} is image-tower-only (no text transformer, transformer.*) and has no stored head "
    "(head.weight, head.bias), and a zero-shot head needs a text tower; attach its "
    "classification head: clipsharp convert CHECKPOINT --head HEAD -o OUT.safetensors"
)
INFERRED = "tensor shapes"  # the source of an architecture read from the checkpoint's shapes


@dataclass(frozen=True)
class Architecture:
    """An open_clip model config and where it came from."""

    name: str  # open_clip model name, or "custom"
    model_cfg: dict[str, Any] = field(hash=False)  # embed_dim, vision_cfg, text_cfg, ...
    preprocess_cfg: dict[str, Any] = field(hash=False)  # mean, std, interpolation, resize_mode
    source: str  # "--model", "metadata", the open_clip_config.json path, or INFERRED
    inferred: dict[str, Any] | None = field(default=None, hash=False)  # ReadConfig.describe()

    def describe(self) -> dict[str, Any]:
        found = {"name": self.name, "source": self.source}
        return found if self.inferred is None else found | {"inferred": self.inferred}

    def metadata(self) -> dict[str, str]:
        """Checkpoint metadata from which every command finds this architecture again:
        ``clipsharp.model`` for an open_clip name, else ``clipsharp.model_config``."""
        if self.name != "custom":
            return {"clipsharp.model": self.name}
        config: dict[str, Any] = self.model_cfg
        if self.preprocess_cfg:
            config = {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}
        return {"clipsharp.model_config": json.dumps(config, sort_keys=True)}


def resolve_architecture(
    checkpoint: Checkpoint, model: str | None = None, *, quick_gelu: bool = False
) -> Architecture:
    """Find a checkpoint's architecture (see the module docstring for the order).

    ``quick_gelu``: read from the shapes, the activation is QuickGELU (OpenAI's weights and
    what was fine-tuned from them), not open_clip's default GELU; shapes cannot tell."""
    if model:
        return _from_model_option(model)
    meta = checkpoint.metadata
    if meta.get("clipsharp.model"):
        return _named(meta["clipsharp.model"], source="metadata")
    if meta.get("clipsharp.model_config"):
        cfg = _parse_config_json(meta["clipsharp.model_config"], f"{checkpoint.path} metadata")
        transformers = meta.get("clipsharp.format") == "transformers"
        return _custom(cfg, source="transformers config.json" if transformers else "metadata")
    beside = checkpoint.path.parent / "open_clip_config.json"
    if beside.is_file():
        cfg = _parse_config_json(beside.read_text(encoding="utf-8"), str(beside))
        return _custom(cfg, source=str(beside))
    return inferred_architecture(checkpoint, quick_gelu=quick_gelu)


def inferred_architecture(checkpoint: Checkpoint, *, quick_gelu: bool = False) -> Architecture:
    """The architecture read from the checkpoint's shapes (``shapes.py``): the open_clip
    config of that name when it is equal, else a custom one; either is built on the meta
    device and must fit every key and shape. Refused, listing what could not be read."""
    found, unread = read_config(checkpoint.tensors, quick_gelu=quick_gelu)
    if found is None:
        raise _cannot_tell(checkpoint, f"could not infer {'; '.join(unread)}")
    arch = _named_fit(found, checkpoint) or Architecture("custom", found.model_cfg, {}, INFERRED)
    misfit = _misfit(arch, checkpoint)
    if misfit:
        raise _cannot_tell(checkpoint, f"a standard ViT CLIP of its shapes does not fit ({misfit})")
    return replace(arch, inferred=found.describe())


def _named_fit(found: ReadConfig, checkpoint: Checkpoint) -> Architecture | None:
    """The open_clip config equal to ``found``; refused when configs fit the shapes but none
    is equal (their heads or activation are not those assumed: shapes cannot choose)."""
    import open_clip

    candidates = [_named(name, source=INFERRED) for name in open_clip.list_models()]
    same_shapes = [
        arch
        for arch in candidates
        if _is_standard_vit(arch.model_cfg)
        and _view(arch.model_cfg, found, shapes=True) == _view(found.model_cfg, found, shapes=True)
    ]
    for arch in same_shapes:
        if _view(arch.model_cfg, found) == _view(found.model_cfg, found):
            return arch
    fitting = [arch.name for arch in same_shapes if not _misfit(arch, checkpoint)]
    if fitting:
        activation = found.assumed["activation"]
        raise _cannot_tell(
            checkpoint,
            f"its shapes fit {', '.join(fitting)}, but not with heads of 64 and {activation}, "
            "and shapes cannot tell which",
        )
    return None


def _is_standard_vit(cfg: Mapping[str, Any]) -> bool:
    """An open_clip ViT image tower and text transformer (what ``shapes.py`` reads)."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    return (
        isinstance(vision.get("layers", 12), int)
        and not vision.get("timm_model_name")
        and not text.get("hf_model_name")
        and not cfg.get("custom_text")
    )


def _view(cfg: Mapping[str, Any], found: ReadConfig, *, shapes: bool = False) -> dict[str, Any]:
    """What is compared of a config: the fields ``found`` read (``shapes``), or the whole
    config with open_clip's defaults, its text tower only as far as ``found`` saw it."""
    full = _canonical(cfg)
    towers = {"vision": dict(full.get("vision_cfg", {})), "text": dict(full.get("text_cfg", {}))}
    for tower in towers.values():
        if isinstance(tower.get("mlp_ratio"), float | int) and isinstance(tower.get("width"), int):
            tower["mlp_ratio"] = int(tower["width"] * tower["mlp_ratio"])  # open_clip's MLP width
    if shapes:
        flat = {"embed_dim": full.get("embed_dim")}
        flat |= {f"{t}.{k}": v for t, tower in towers.items() for k, v in tower.items()}
        return {name: flat.get(name) for name in found.read}
    if found.text_fields is not None:
        towers["text"] = {k: towers["text"].get(k) for k in found.text_fields}
    top = ("embed_dim", "quick_gelu", "custom_text", "init_logit_bias", "nonscalar_logit_scale")
    return {k: full.get(k) or None for k in top} | towers


def _misfit(arch: Architecture, checkpoint: Checkpoint) -> str | None:
    """Why ``arch`` (built on the meta device) does not hold the checkpoint's keys and
    shapes, or None when it does."""
    stored = {key: checkpoint.tensors[key].shape for key in HEAD_KEYS if head_shape(checkpoint)}
    try:
        model = build_model(arch, device="meta")
        drop_absent_text(model, checkpoint.tensors.keys())
        built = {key: t.shape for key, t in model.state_dict().items()}
        check_keys(built | stored, checkpoint, arch)
    except CheckpointError as e:
        return str(e).split("; ")[0]
    return None


def _cannot_tell(checkpoint: Checkpoint, why: str) -> CheckpointError:
    return CheckpointError(
        f"cannot tell the architecture of {checkpoint.path}: {why}; pass --model NAME or "
        "--model CONFIG.json, or store it in the metadata key clipsharp.model, or put an "
        "open_clip_config.json beside the file"
    )


MAX_CONFIG_BYTES = 2**20  # a model config is a few hundred bytes; a checkpoint is not one


def _from_model_option(model: str) -> Architecture:
    path = Path(model)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--model {model}: config file does not exist")
        return _custom(_config_file(path, model), "--model")
    return _named(model, source="--model")


def _config_file(path: Path, model: str) -> dict[str, Any]:
    """The JSON object of ``--model FILE``; anything else (a checkpoint) named as not one."""
    with path.open("rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    why = f"it is over {MAX_CONFIG_BYTES // 2**20} MiB" if len(data) > MAX_CONFIG_BYTES else ""
    try:
        cfg = None if why else json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        why = "it is not text"
    except json.JSONDecodeError as e:
        why = f"it is not valid JSON: {e}"
    except RecursionError:
        why = "it is nested too deeply"
    if not why and not isinstance(cfg, dict):
        why = "it is not a JSON object"
    if why:
        raise ConfigError(
            f"--model {model} is not a model config ({why}); --model takes an open_clip name "
            "(ViT-B-32) or a model-config JSON, not a checkpoint"
        )
    return cfg


def _named(name: str, source: str) -> Architecture:
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        similar = similar_names(name, open_clip.list_models())
        hint = f" (did you mean {', '.join(similar)}?)" if similar else ""
        raise ConfigError(
            f"unknown architecture {name!r}{hint}; use an open_clip model name "
            "(python -c 'import open_clip; print(open_clip.list_models())') or a config JSON"
        )
    return Architecture(name, cfg, dict(cfg.pop("preprocess_cfg", {}) or {}), source)


def similar_names(name: str, known: Sequence[str], limit: int = 4) -> list[str]:
    """Up to ``limit`` of ``known``, most similar first; ``/`` read as ``-`` (``ViT-B/32``
    is ``ViT-B-32``), case ignored. Whole names only."""
    import difflib

    wanted = name.replace("/", "-").casefold()
    folded = {model.casefold(): model for model in known}
    exact = [folded[wanted]] if wanted in folded else []
    close = difflib.get_close_matches(wanted, list(folded), n=limit, cutoff=0.6)
    return list(dict.fromkeys(exact + [folded[c] for c in close]))[:limit]


def same_architecture(a: Architecture, b: Architecture) -> bool:
    """Whether two model configs build the same model: compared with open_clip's defaults
    filled in, so a named model and its config written out in full agree."""
    return _canonical(a.model_cfg) == _canonical(b.model_cfg)


def _canonical(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    out = {"quick_gelu": False, "custom_text": False, **cfg}
    try:
        out["vision_cfg"] = asdict(CLIPVisionCfg(**cfg.get("vision_cfg", {})))
        out["text_cfg"] = asdict(CLIPTextCfg(**cfg.get("text_cfg", {})))
    except TypeError:  # keys of another tower type: compared as written
        return dict(cfg)
    return out


def _custom(cfg: dict[str, Any], source: str) -> Architecture:
    """Accept a bare model config or the hub layout ``{"model_cfg", "preprocess_cfg"}``."""
    preprocess = dict(cfg.get("preprocess_cfg", {}) or {})
    model_cfg = dict(cfg.get("model_cfg", cfg))
    model_cfg.pop("preprocess_cfg", None)
    if not {"embed_dim", "vision_cfg", "text_cfg"} <= model_cfg.keys():
        raise CheckpointError(
            f"model config from {source} lacks embed_dim, vision_cfg or text_cfg; "
            "is it an open_clip model config?"
        )
    return Architecture("custom", model_cfg, preprocess, source)


def _parse_config_json(text: str, where: str) -> dict[str, Any]:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"model config in {where} is not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"model config in {where} is not a JSON object")
    return cfg


@contextmanager
def _without_random_init() -> Iterator[None]:
    """While open, ``torch.nn.init``'s in-place initialisers do nothing.

    Every weight is loaded from a checkpoint right after the build (``check_architecture``
    makes sure each key is there), so drawing random weights first is wasted work: 0.76 s
    against 0.08 s for ViT-B-32 on a CPU (benchmarks/startup.py). Buffers that modules
    compute (attention masks) are built as usual.
    """
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, _keep)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def build_model(arch: Architecture, device: str | None = None) -> torch.nn.Module:
    """An open_clip model of this architecture, in eval mode, on the CPU (or ``device``:
    ``meta`` builds shapes only), its weights not initialised (left as allocated): load a
    checkpoint into it before use."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = json.loads(json.dumps(arch.model_cfg))  # a deep copy the constructor may change
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False  # weights come from the checkpoint
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    cls = CustomTextCLIP if custom_text else CLIP
    try:
        with _without_random_init(), torch.device(device) if device else nullcontext():
            model = cls(**cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"open_clip cannot build architecture {arch.name} from {arch.source}: {e}"
        ) from e
    return model.eval()


def drop_absent_text(model: torch.nn.Module, keys: Collection[str]) -> list[str]:
    """For an image-tower-only checkpoint (``keys`` without a text transformer): remove from
    ``model`` each text-side member (the text transformer, embeddings, final norm,
    projection, scales) of which ``keys`` hold no tensor, so that no weight left as
    allocated is ever part of the model. Returns the names removed (none with a text tower).

    What is left is the image tower and the members ``keys`` hold, each loaded from them;
    the model's ``encode_text`` cannot run, and nothing calls it (a stored head classifies).
    """
    if has_text_tower(keys):
        return []
    members = {key.split(".", 1)[0] for key in model.state_dict()} - {"visual"}
    dropped = [
        name
        for name in sorted(members)
        if not any(key == name or key.startswith(f"{name}.") for key in keys)
    ]
    for name in dropped:
        delattr(model, name)
    return dropped


def eval_transform(arch: Architecture, model: torch.nn.Module) -> Callable:
    """The model's own open_clip evaluation transform (resize, crop, normalise)."""
    import open_clip

    pre = arch.preprocess_cfg
    return open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=pre.get("mean"),
        std=pre.get("std"),
        interpolation=pre.get("interpolation"),
        resize_mode=pre.get("resize_mode"),
        fill_color=pre.get("fill_color", 0),
    )


def build_tokenizer(arch: Architecture) -> Callable[[Sequence[str]], torch.Tensor]:
    """The tokenizer of the text tower: open_clip's for a name, else from the config.

    Tokenizers kept on the HuggingFace hub (SigLIP, HF text towers) are read from the
    local cache when offline; a miss is a clear error, not a traceback.
    """
    import open_clip

    text_cfg = arch.model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", 77)
    try:
        if arch.name != "custom":
            return open_clip.get_tokenizer(arch.name)
        if text_cfg.get("hf_tokenizer_name"):
            return open_clip.HFTokenizer(
                text_cfg["hf_tokenizer_name"], context_length=context_length
            )
        return open_clip.SimpleTokenizer(context_length=context_length)
    except Exception as e:  # network, cache, missing tokenizer files: one meaning here
        raise CheckpointError(
            f"cannot build the tokenizer of architecture {arch.name} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:150] if str(e) else ''}); it may live on the "
            "HuggingFace hub: go online once to cache it"
        ) from e


def load_templates(spec: str) -> list[Callable[[str], str]] | list[str]:
    """Prompt templates: ``openai`` (80), ``simple``, or a file of lines holding ``{}``."""
    import open_clip

    if spec == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    if spec == "simple":
        return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--templates {spec!r} is neither openai, simple nor an existing file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    templates = [line for line in lines if line]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ConfigError(
            f"--templates {spec}: every line must hold {{}} for the class name"
            + (f" (not: {bad[0]!r})" if bad else " and the file is empty")
        )
    return templates


def is_image_key(key: str) -> bool:
    return key.startswith("visual.")


def is_text_key(key: str) -> bool:
    """Keys of the text tower: everything but the image tower, the scales and a stored head."""
    return not (is_image_key(key) or key.startswith("head.") or key in SCALE_KEYS)


class ClipClassifier:
    """One working open_clip model (plus an optional stored head) on a device.

    ``tensors`` maps every checkpoint key to the live tensor it is written into;
    weights are changed only through that map, in place.
    """

    def __init__(self, model: torch.nn.Module, *, head_shape: torch.Size | None, device, dtype):
        self.model = model.to(device=device, dtype=dtype)
        self.device = torch.device(device)
        self.dtype = dtype
        self.head = None
        if head_shape is not None:
            out_features, in_features = head_shape
            self.head = torch.nn.Linear(in_features, out_features).to(device=device, dtype=dtype)
        self.tensors: dict[str, torch.Tensor] = {
            key: tensor.data for key, tensor in self.model.state_dict(keep_vars=True).items()
        }
        if self.head is not None:
            self.tensors["head.weight"] = self.head.weight.data
            self.tensors["head.bias"] = self.head.bias.data

    @property
    def has_text_tower(self) -> bool:
        """False when built for an image-tower-only checkpoint: only a stored head classifies."""
        return has_text_tower(self.tensors)

    @torch.no_grad()
    def write(self, key: str, value: torch.Tensor) -> None:
        self.tensors[key].copy_(value)

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            self.write(key, value)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) model inputs -> (B, D) normalised image features."""
        return F.normalize(self.model.encode_image(images.to(self.device, self.dtype)), dim=-1)

    def classify(self, features: torch.Tensor, head: torch.Tensor | None) -> torch.Tensor:
        """(B, D) normalised features -> (B, C) logits in fp32, ``head`` as ``ZeroShotHeads.get``
        gives it.

        Zero-shot head (D, C): ``logit_scale.exp() * features @ head``.
        Stored head: ``features @ W.T + b`` (the scale is folded into W, as in WiSE-FT),
        restricted to the columns ``head`` (the dataset's classes) when it is not None.
        """
        if self.head is not None:
            logits = self.head(features).float()
            return logits if head is None else logits[:, head]
        scale = self.model.logit_scale.exp()
        return (scale * features @ head.to(features.dtype)).float()

    def logits(self, images: torch.Tensor, head: torch.Tensor | None) -> torch.Tensor:
        """(B, 3, H, W) model inputs -> (B, C) logits in fp32."""
        return self.classify(self.features(images), head)


def build_classifier(
    arch: Architecture, checkpoints: Sequence[Checkpoint], *, device, dtype: torch.dtype
) -> ClipClassifier:
    """The working classifier of ``checkpoints`` (of one layout), holding the last: the
    architecture built (less the text members an image-tower-only checkpoint lacks), with
    the stored head, each checkpoint checked in turn against its keys and shapes."""
    last = checkpoints[-1]
    model = build_model(arch)
    drop_absent_text(model, last.tensors.keys())
    classifier = ClipClassifier(model, head_shape=head_shape(last), device=device, dtype=dtype)
    for checkpoint in checkpoints:
        check_architecture(classifier, checkpoint, arch)
    classifier.load(last.tensors)
    return classifier


def check_architecture(classifier: ClipClassifier, checkpoint: Checkpoint, arch: Architecture):
    """Refuse a checkpoint whose keys or shapes differ from the architecture's, naming them."""
    check_keys({key: t.shape for key, t in classifier.tensors.items()}, checkpoint, arch)


def check_keys(expected: Mapping[str, torch.Size], checkpoint: Checkpoint, arch: Architecture):
    """Refuse a checkpoint whose keys or shapes are not ``expected``, naming the first."""
    found = checkpoint.tensors
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    where = f"architecture {arch.name} (from {arch.source})"
    if missing:
        raise CheckpointError(
            f"{checkpoint.path} has no key {missing[0]}"
            + (f" (and {len(missing) - 1} more keys)" if len(missing) > 1 else "")
            + f" of {where}; is it a CLIP checkpoint, and is the architecture right?"
        )
    if extra:
        raise CheckpointError(
            f"{checkpoint.path} has key {extra[0]} that {where} lacks; is --model right?"
        )
    for key, shape in expected.items():
        if found[key].shape != shape:
            raise CheckpointError(
                f"{checkpoint.path}: {key} has shape {tuple(found[key].shape)}, {where} "
                f"expects {tuple(shape)}; is --model right?"
            )


def head_shape(checkpoint: Checkpoint) -> torch.Size | None:
    """The shape of a stored head, or None when the checkpoint has none."""
    has = [key in checkpoint.tensors for key in HEAD_KEYS]
    if all(has):
        return checkpoint.tensors["head.weight"].shape
    if any(has):
        raise CheckpointError(
            f"{checkpoint.path} has only one of head.weight and head.bias; store both or neither"
        )
    return None


@dataclass(frozen=True)
class HeadPlan:
    """How a dataset's labels meet the head: the classes a zero-shot head is built over,
    the stored head's outputs kept, and each label's column among the logits."""

    classnames: tuple[str, ...]  # zero-shot: the head's classes (the dataset's, or ImageNet's)
    columns: torch.Tensor | None  # stored head: the outputs kept, in label order; None: all
    targets: torch.Tensor | None  # (C,) each label's column of the logits; None: the label
    how: str  # in words, for the report's config.head_mapping


class ZeroShotHeads:
    """The head each dataset is classified with.

    Zero-shot heads are built from the text tower, one per list of class names and
    :meth:`text_state` (the identity of the text weights the model holds, derived here
    from which text-tower tensors were written), and kept until :meth:`invalidate`. A
    path that leaves the text tower alone encodes the class prompts once; one that moves
    it, once per distinct text weights. No analysis declares what its points move.

    A dataset whose classes are some of the head's (ImageNet-A / -R against a 1000-class
    head) is found in the stored head by class name, by wnid, or, for a 1000-output head
    that records no names, by its ImageNet index (the standard order assumed). Its logits
    are then the head's columns of its classes (``subset_logits="restricted"``, WiSE-FT's
    projection), or every column, a prediction outside its classes counting as wrong
    (``"all"``); a zero-shot head is built over its classes, or over ImageNet's 1000.
    """

    def __init__(
        self,
        classifier: ClipClassifier,
        tokenizer,
        templates: Sequence,
        head_classnames=None,
        subset_logits: str = "restricted",
    ) -> None:
        self.classifier = classifier
        self.tokenizer = tokenizer
        self.templates = templates
        self.head_classnames: list[str] | None = head_classnames
        self.subset_logits = subset_logits
        self.encodings = 0  # times the class prompts were encoded (for tests and timing)
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._plans: dict[tuple, HeadPlan] = {}
        parameters = classifier.model.state_dict(keep_vars=True)  # of which tensors are .data
        text = [key for key in classifier.tensors if is_text_key(key)]
        self._text = [classifier.tensors[k] for k in text] + [parameters[k] for k in text]
        self._fresh = itertools.count()
        self.invalidate()

    def text_state(self, written_as: Hashable = None) -> Hashable:
        """The identity of the text-tower weights the model holds now.

        None (the text as it was at :meth:`invalidate`) until a text-tower tensor is written;
        then, at the first look after each write, ``written_as`` (what the caller knows the
        weights to be: the engine names the point it just wrote, whose weights are the same
        at every block), else a new identity. A write is seen by torch's count of in-place
        writes (``Tensor._version``) of each text-tower tensor of ``classifier.tensors``,
        which every writer of weights (``ClipClassifier.write``, ``WeightPath``,
        ``Perturbation``) goes through, and of the model's parameter it is the data of.
        """
        writes = self._write_counts()
        if writes != self._writes:
            self._state = ("written", next(self._fresh)) if written_as is None else written_as
            self._writes = writes
        return self._state

    def _write_counts(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._text)

    def get(
        self,
        classnames: Sequence[str],
        written_as: Hashable = None,
        progress: Progress | None = None,
        templates: Sequence[str] | None = None,
    ) -> torch.Tensor | None:
        """Zero-shot: the (D, C) head of these class names at the text weights the model
        holds (``written_as``: see :meth:`text_state`), from ``templates`` (a dataset's own;
        None: the run's). Stored head: the (C,) columns of these classes in the head's
        outputs, or None when they are its classes, in order."""
        if self.classifier.head is not None:
            return self.plan(classnames).columns
        if not self.classifier.has_text_tower:
            raise CheckpointError(NO_TEXT_TOWER.format(what="the checkpoint"))
        state = self.text_state(written_as)
        key = (state, tuple(classnames), tuple(templates) if templates else None)
        if key not in self._cache:
            self._cache[key] = self._build(key, progress)
        return self._cache[key]

    def for_data(
        self, data, written_as: Hashable = None, progress: Progress | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(head, targets)`` of a dataset (an ``EvalData``): the head ``classify`` takes,
        and each label's column of the logits (None: the label itself)."""
        plan = self.plan(data.classnames, data.classes.imagenet)
        if self.classifier.head is not None:
            return plan.columns, plan.targets
        head = self.get(plan.classnames, written_as, progress, templates=data.templates)
        return head, plan.targets

    def invalidate(self) -> None:
        """Forget every zero-shot head; the text the model holds now is the run's (None)."""
        self._cache.clear()
        self._writes, self._state = self._write_counts(), None

    def plan(self, classnames: Sequence[str], imagenet: Sequence[int] | None = None) -> HeadPlan:
        """How classes ``classnames`` (of standard ImageNet indices ``imagenet``, when
        known) meet the head; see the class doc."""
        key = (tuple(classnames), None if imagenet is None else tuple(imagenet))
        if key not in self._plans:
            if self.classifier.head is None:
                self._plans[key] = self._zero_shot_plan(*key)
            else:
                self._plans[key] = self._stored_plan(*key)
        return self._plans[key]

    def _zero_shot_plan(self, classnames: tuple[str, ...], imagenet) -> HeadPlan:
        if self.subset_logits == "all" and imagenet is not None and len(imagenet) < 1000:
            from ..data.imagenet import clip_names

            targets = torch.tensor(imagenet, device=self.classifier.device)
            how = f"all: {len(imagenet)} of ImageNet's classes, argmax over its 1000"
            return HeadPlan(clip_names(), None, targets, how)
        return HeadPlan(classnames, None, None, f"zero-shot head of its {len(classnames)} classes")

    def _stored_plan(self, classnames: tuple[str, ...], imagenet) -> HeadPlan:
        outputs = self.classifier.head.out_features
        index, how = self._head_index(classnames, imagenet)
        if index == list(range(outputs)):
            return HeadPlan(classnames, None, None, how)
        found = torch.tensor(index, device=self.classifier.device)
        if self.subset_logits == "all":
            return HeadPlan(classnames, None, found, f"all {outputs} outputs; {how}")
        return HeadPlan(classnames, found, None, f"restricted to {len(index)} outputs; {how}")

    def _head_index(self, classnames: tuple[str, ...], imagenet) -> tuple[list[int], str]:
        """The stored head's output of each class, and how it was found."""
        outputs = self.classifier.head.out_features
        names = self.head_classnames
        if names is None:
            if len(classnames) == outputs:
                return list(range(outputs)), "the head's outputs in order"
            if outputs == 1000 and imagenet is not None:
                return list(imagenet), "ImageNet's standard order assumed (no head class names)"
            raise DatasetError(
                f"a dataset has {len(classnames)} classes but the stored head has {outputs}; "
                "give the head's class names (--head-classnames FILE|imagenet) to map them"
            )
        if len(names) != outputs:
            raise DatasetError(
                f"--head-classnames lists {len(names)} names but the stored head has {outputs} "
                "outputs; give one name per output, in order"
            )
        position = {name: i for i, name in enumerate(names)}
        keys = [[name] for name in classnames]
        if imagenet is not None:
            from ..data.imagenet import wnids

            keys = [[name, wnids()[i]] for name, i in zip(classnames, imagenet, strict=True)]
        found = [next((position[k] for k in ks if k in position), None) for ks in keys]
        if None in found:
            missing = classnames[found.index(None)]
            raise DatasetError(
                f"class {missing!r} of a dataset is not among the stored head's class names; "
                "check --head-classnames or the dataset's --classnames"
            )
        return found, "by class name"

    @torch.inference_mode()
    def _build(self, key: tuple, progress=None) -> torch.Tensor:
        """(D, C): the class prompts encoded ten classes at a time (open_clip's own batches),
        reporting the classes done as the ``"zero-shot head"`` task."""
        import open_clip

        classnames, templates = key[1], key[2] or self.templates
        self.encodings += 1
        columns = []
        for start in range(0, len(classnames), 10):
            columns.append(
                open_clip.build_zero_shot_classifier(
                    self.classifier.model,
                    self.tokenizer,
                    classnames[start : start + 10],
                    templates,
                    num_classes_per_batch=10,
                    device=self.classifier.device,
                )
            )
            if progress is not None:
                done = min(start + 10, len(classnames))
                progress(Event("zero-shot head", done, len(classnames), unit="classes"))
        return torch.cat(columns, dim=1)

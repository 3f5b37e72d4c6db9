"""Architectures, open_clip model builds, and the classifier being evaluated.

The architecture of a checkpoint is found, in this order: ``--model`` (an
open_clip name or a config JSON file), the safetensors metadata
(``clipsharp.model`` or ``clipsharp.model_config``), an
``open_clip_config.json`` beside the file. Models are built from the config
dict (never through a global registry) and filled from the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError, DatasetError
from ..progress import Progress
from .checkpoint import Checkpoint

HEAD_KEYS = ("head.weight", "head.bias")
SCALE_KEYS = ("logit_scale", "logit_bias")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Architecture:
    """An open_clip model config and where it came from."""

    name: str  # open_clip model name, or "custom"
    model_cfg: dict[str, Any] = field(hash=False)  # embed_dim, vision_cfg, text_cfg, ...
    preprocess_cfg: dict[str, Any] = field(hash=False)  # mean, std, interpolation, resize_mode
    source: str  # "--model", "metadata", or the open_clip_config.json path

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source}

    def metadata(self) -> dict[str, str]:
        """Checkpoint metadata from which every command finds this architecture again:
        ``clipsharp.model`` for an open_clip name, else ``clipsharp.model_config``."""
        if self.name != "custom":
            return {"clipsharp.model": self.name}
        config: dict[str, Any] = self.model_cfg
        if self.preprocess_cfg:
            config = {"model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}
        return {"clipsharp.model_config": json.dumps(config, sort_keys=True)}


def resolve_architecture(checkpoint: Checkpoint, model: str | None = None) -> Architecture:
    """Find a checkpoint's architecture (see the module docstring for the order)."""
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
    raise CheckpointError(
        f"cannot tell the architecture of {checkpoint.path}: pass --model NAME or --model "
        "CONFIG.json, or store it in the metadata key clipsharp.model, or put an "
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


def build_model(arch: Architecture) -> torch.nn.Module:
    """An open_clip model of this architecture, in eval mode, on the CPU, its weights not
    initialised (left as allocated): load a checkpoint into it before use."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = json.loads(json.dumps(arch.model_cfg))  # a deep copy the constructor may change
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False  # weights come from the checkpoint
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    cls = CustomTextCLIP if custom_text else CLIP
    try:
        with _without_random_init():
            model = cls(**cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"open_clip cannot build architecture {arch.name} from {arch.source}: {e}"
        ) from e
    return model.eval()


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


def check_architecture(classifier: ClipClassifier, checkpoint: Checkpoint, arch: Architecture):
    """Refuse a checkpoint whose keys or shapes differ from the architecture's, naming them."""
    expected, found = classifier.tensors, checkpoint.tensors
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
    for key, tensor in expected.items():
        if found[key].shape != tensor.shape:
            raise CheckpointError(
                f"{checkpoint.path}: {key} has shape {tuple(found[key].shape)}, {where} "
                f"expects {tuple(tensor.shape)}; is --model right?"
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


class ZeroShotHeads:
    """The head each dataset is classified with.

    Zero-shot heads are built from the text tower, one per list of class names and
    text-tower ``state`` (an identity the caller gives to the text weights the model
    holds: the engine passes each point's), and kept until :meth:`invalidate`. A path
    that leaves the text tower alone encodes the class prompts once; one that moves it,
    once per distinct text weights. With a
    stored head, a dataset whose classes are a subset of the head's (ImageNet-R
    style) is mapped by class name: its logits are the head's columns of its
    classes (``head_classnames``: the stored head's class names, in order).
    """

    def __init__(
        self, classifier: ClipClassifier, tokenizer, templates: Sequence, head_classnames=None
    ) -> None:
        self.classifier = classifier
        self.tokenizer = tokenizer
        self.templates = templates
        self.head_classnames: list[str] | None = head_classnames
        self.encodings = 0  # times the class prompts were encoded (for tests and timing)
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def get(
        self, classnames: Sequence[str], state: Hashable = None, progress: Progress | None = None
    ) -> torch.Tensor | None:
        """Zero-shot: the (D, C) head of these class names, encoded by the text tower as it
        is now the first time ``state`` asks. Stored head: the (C,) columns of these classes
        in the head's outputs, or None when they are its classes, in order."""
        if self.classifier.head is not None:
            return self.columns(classnames)
        key = (state, tuple(classnames))
        if key not in self._cache:
            self._cache[key] = self._build(key, progress)
        return self._cache[key]

    def invalidate(self) -> None:
        self._cache.clear()

    def columns(self, classnames: Sequence[str]) -> torch.Tensor | None:
        """The stored head's outputs for ``classnames``, mapped by name (see the class doc)."""
        outputs = self.classifier.head.out_features
        names = self.head_classnames
        if names is None:
            if len(classnames) != outputs:
                raise DatasetError(
                    f"a dataset has {len(classnames)} classes but the stored head has {outputs}; "
                    "give the head's class names (--head-classnames FILE) to map them by name"
                )
            return None
        if len(names) != outputs:
            raise DatasetError(
                f"--head-classnames lists {len(names)} names but the stored head has {outputs} "
                "outputs; give one name per output, in order"
            )
        missing = [c for c in classnames if c not in names]
        if missing:
            raise DatasetError(
                f"class {missing[0]!r} of a dataset is not among the stored head's class names; "
                "check --head-classnames or the dataset's --classnames"
            )
        index = [names.index(c) for c in classnames]
        if index == list(range(outputs)):
            return None
        return torch.tensor(index, device=self.classifier.device)

    @torch.inference_mode()
    def _build(self, key: tuple[Hashable, tuple[str, ...]], progress=None) -> torch.Tensor:
        """(D, C): the class prompts encoded ten classes at a time (open_clip's own batches),
        reporting ``progress("zero-shot head", classes done, classes)``."""
        import open_clip

        classnames = key[1]
        self.encodings += 1
        columns = []
        for start in range(0, len(classnames), 10):
            columns.append(
                open_clip.build_zero_shot_classifier(
                    self.classifier.model,
                    self.tokenizer,
                    classnames[start : start + 10],
                    self.templates,
                    num_classes_per_batch=10,
                    device=self.classifier.device,
                )
            )
            if progress is not None:
                progress("zero-shot head", min(start + 10, len(classnames)), len(classnames))
        return torch.cat(columns, dim=1)

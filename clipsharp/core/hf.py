"""HuggingFace transformers ``CLIPModel`` checkpoints, read as they are saved and written back.

``save_pretrained`` writes a folder: ``config.json`` and ``model.safetensors``, or shards
``model-0000i-of-0000n.safetensors`` listed in ``model.safetensors.index.json``. Such a
folder (or a ``model.safetensors`` with its ``config.json`` beside it) is read here:
the architecture from ``config.json``, mapped onto an open_clip model config, and the
weights renamed onto open_clip's keys, so every analysis sees the same layer groups as
for any open_clip model. ``to_transformers`` maps the keys back (``merge`` writes them).

Neither torch nor transformers is imported at module import; transformers is not needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    import torch

FORMAT = "transformers"  # the value of the metadata key clipsharp.format
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PROCESSOR = "preprocessor_config.json"
# files of the processor and tokenizer that a merged folder carries over from the fine-tuned one
COMPANIONS = (
    PROCESSOR,
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)
SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")

CLIP_EOT = 49407  # CLIP BPE's end-of-text id: open_clip pools there (the largest id, argmax)
CLIP_VOCAB = 49408  # CLIP BPE's vocabulary, that of open_clip's SimpleTokenizer
LEGACY_EOS = 2  # eos_token_id of configs before transformers 4.31: pools at argmax(ids) too
LAYER_NORM_EPS = 1e-5  # open_clip's (torch's) LayerNorm eps

# CLIPTextConfig / CLIPVisionConfig / CLIPConfig defaults, for keys config.json leaves out
TEXT_DEFAULTS = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "eos_token_id": CLIP_EOT,
}  # a table, aligned to read by column  # fmt: skip
VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}  # a table, aligned to read by column  # fmt: skip
PROJECTION_DIM = 512

# hidden_act -> (open_clip quick_gelu, act_kwargs of nn.GELU)
ACTIVATIONS = {
    "quick_gelu": (True, None),  # OpenAI-trained towers: x * sigmoid(1.702 x)
    "gelu": (False, None),  # exact (erf) GELU, torch's default
    "gelu_python": (False, None),
    "gelu_new": (False, {"approximate": "tanh"}),
    "gelu_pytorch_tanh": (False, {"approximate": "tanh"}),
}

# transformers name -> open_clip name; an entry ending in "." maps a prefix, else a whole key
NAMES = (
    ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),  # sic: transformers' spelling
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("visual_projection.weight", "visual.proj"),  # (E, W) there, (W, E) here
    ("text_model.embeddings.token_embedding.", "token_embedding."),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("text_model.final_layer_norm.", "ln_final."),
    ("text_projection.weight", "text_projection"),  # (E, W) there, (W, E) here
    ("logit_scale", "logit_scale"),
)
# within a residual block (after "...layers.{i}." / "...resblocks.{i}.")
BLOCK_NAMES = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
)
TRANSPOSED = ("visual.proj", "text_projection")  # open_clip names of the projections
QKV = re.compile(
    r"(?P<block>.+\.layers\.\d+\.)self_attn\.(?P<part>[qkv])_proj\.(?P<kind>weight|bias)"
)
IN_PROJ = re.compile(r"(?P<block>.+\.resblocks\.\d+\.)attn\.in_proj_(?P<kind>weight|bias)")
BLOCK = re.compile(r"(?P<block>.+\.(?:layers|resblocks)\.\d+\.)(?P<rest>.+)")
DROPPED = re.compile(r".*position_ids")  # buffers older transformers saved; recomputed


@dataclass(frozen=True)
class Layout:
    """A transformers checkpoint on disk."""

    path: Path  # the folder (or the model.safetensors file) the user gave
    config_path: Path  # its config.json
    config: dict[str, Any]  # config.json, parsed
    weights: tuple[Path, ...]  # the safetensors files holding the tensors, in order
    index: Path | None = None  # model.safetensors.index.json of shards

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent


def find_layout(path: Path) -> Layout | None:
    """The transformers checkpoint at ``path``, or None when it is none (an open_clip file).

    A folder with ``config.json`` is one; so is a safetensors file whose keys are
    transformers' (``vision_model.*``, ``text_model.*``), which needs ``config.json``
    beside it. Raises :class:`CheckpointError` for one whose model is not a ``CLIPModel``.
    """
    if path.is_dir():
        config = _read_json(path / CONFIG) if (path / CONFIG).is_file() else {}
        if not (config.get("architectures") or config.get("model_type")):
            return None  # no transformers config here
        _check_clip(config, path / CONFIG)
        weights = _weights_in(path)
        index = path / INDEX if weights[0].name != WEIGHTS else None
        return Layout(path, path / CONFIG, config, weights, index)
    if path.name == INDEX and path.is_file():
        return find_layout(path.parent)
    if not (path.is_file() and _has_transformers_keys(path)):
        return None
    if SHARD.fullmatch(path.name):
        raise CheckpointError(
            f"{path} is one shard of a transformers checkpoint; give the folder {path.parent}"
        )
    beside = path.parent / CONFIG
    if not beside.is_file():
        raise CheckpointError(
            f"{path} holds a transformers model (keys vision_model.*, text_model.*) but has no "
            f"{CONFIG} beside it; put the {CONFIG} saved with it there, or give the folder"
        )
    config = _read_json(beside)
    _check_clip(config, beside)
    return Layout(path, beside, config, (path,))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object; is it a transformers config.json?")
    return config


def _check_clip(config: Mapping[str, Any], path: Path) -> None:
    """A CLIPModel's config passes; any other model is refused in one line."""
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if architectures == ["CLIPModel"] or (not architectures and model_type == "clip"):
        return
    kind = architectures[0] if architectures else model_type or "unnamed model"
    raise CheckpointError(
        f"{path.parent} is a transformers {kind} checkpoint, which clipsharp does not read: it "
        "reads transformers CLIPModel checkpoints (both towers) and open_clip safetensors"
    )


def _weights_in(folder: Path) -> tuple[Path, ...]:
    if (folder / WEIGHTS).is_file():
        return (folder / WEIGHTS,)
    if (folder / INDEX).is_file():
        return _shards(folder / INDEX)
    if any((folder / name).is_file() for name in PICKLED):
        raise CheckpointError(
            f"{folder} holds pickled weights (pytorch_model.bin), which clipsharp never "
            "unpickles; save the model again with save_pretrained(folder, safe_serialization=True)"
        )
    raise CheckpointError(f"{folder} has {CONFIG} but neither {WEIGHTS} nor {INDEX}")


def shard_names(index: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` lists, sorted."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{index} is not a safetensors index (JSON with a weight_map); save the model again"
        ) from e


def _shards(index: Path) -> tuple[Path, ...]:
    shards = tuple(index.parent / name for name in shard_names(index))
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise CheckpointError(f"{index} lists {missing[0]}, which is not in {index.parent}")
    return shards


def expected_keys(layout: Layout) -> set[str] | None:
    """The keys a sharded checkpoint's index lists (None for one file)."""
    if layout.index is None:
        return None
    return set(_read_json(layout.index)["weight_map"])


def _has_transformers_keys(path: Path) -> bool:
    """Whether a safetensors header names transformers CLIP keys (never raises)."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= 100 << 20:
                return False
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and any(
        key.startswith(("vision_model.", "text_model.")) for key in header
    )


def model_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The open_clip model config of a CLIPModel ``config.json`` (transformers' defaults fill
    what it leaves out). Refuses what open_clip's CLIP cannot express exactly."""
    text = {**TEXT_DEFAULTS, **_clean(config.get("text_config"))}
    vision = {**VISION_DEFAULTS, **_clean(config.get("vision_config"))}
    quick_text, act_text = _activation(text["hidden_act"], where)
    quick_vision, act_vision = _activation(vision["hidden_act"], where)
    if quick_text != quick_vision:
        raise CheckpointError(
            f"{where}: the text tower uses {text['hidden_act']} and the image tower "
            f"{vision['hidden_act']}; open_clip's CLIP uses one activation for both"
        )
    _check_tokenizer(text, where)
    if vision["num_channels"] != 3:
        raise CheckpointError(f"{where}: {vision['num_channels']} image channels; CLIP takes 3")
    vision_cfg = {
        "image_size": _square(vision["image_size"], "image_size", where),
        "patch_size": _square(vision["patch_size"], "patch_size", where),
        "width": vision["hidden_size"],
        "layers": vision["num_hidden_layers"],
        "head_width": _head_width(vision, where),
        "mlp_ratio": _mlp_ratio(vision, where),
    }
    text_cfg = {
        "context_length": text["max_position_embeddings"],
        "vocab_size": text["vocab_size"],
        "width": text["hidden_size"],
        "heads": text["num_attention_heads"],
        "layers": text["num_hidden_layers"],
        "mlp_ratio": _mlp_ratio(text, where),
    }
    _head_width(text, where)
    for cfg, tower, act in ((vision_cfg, vision, act_vision), (text_cfg, text, act_text)):
        eps = tower.get("layer_norm_eps") or LAYER_NORM_EPS
        if eps != LAYER_NORM_EPS:
            cfg["norm_kwargs"] = {"eps": eps}
        if act:
            cfg["act_kwargs"] = act
    embed_dim = config.get("projection_dim") or PROJECTION_DIM
    return {
        "embed_dim": embed_dim,
        "quick_gelu": quick_text,
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
    }


def _clean(tower: Any) -> dict[str, Any]:
    """A tower's config without null values (null means transformers' default)."""
    return {k: v for k, v in (tower or {}).items() if v is not None}


def _activation(name: str, where: str) -> tuple[bool, dict | None]:
    if name not in ACTIVATIONS:
        raise CheckpointError(
            f"{where}: hidden_act {name!r} has no open_clip equivalent; clipsharp reads "
            f"{', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def _check_tokenizer(text: Mapping[str, Any], where: str) -> None:
    """open_clip's SimpleTokenizer (CLIP BPE) must give the ids this text tower was trained on."""
    eos = text["eos_token_id"]
    if text["vocab_size"] != CLIP_VOCAB or eos not in (CLIP_EOT, LEGACY_EOS):
        raise CheckpointError(
            f"{where}: a text vocabulary of {text['vocab_size']} tokens ending at id {eos} is not "
            f"CLIP's BPE ({CLIP_VOCAB} tokens, end of text {CLIP_EOT}), the tokenizer clipsharp "
            "uses; this model's text tower cannot be read"
        )


def _square(value: Any, name: str, where: str) -> int:
    sizes = value if isinstance(value, list | tuple) else [value]
    if len(set(sizes)) != 1:
        raise CheckpointError(f"{where}: {name} {value} is not square; open_clip needs one size")
    return int(sizes[0])


def _head_width(tower: Mapping[str, Any], where: str) -> int:
    width, heads = tower["hidden_size"], tower["num_attention_heads"]
    if width % heads:
        raise CheckpointError(f"{where}: hidden_size {width} is not a multiple of {heads} heads")
    return width // heads


def _mlp_ratio(tower: Mapping[str, Any], where: str) -> float:
    width, hidden = tower["hidden_size"], tower["intermediate_size"]
    ratio = hidden / width
    if int(width * ratio) != hidden:  # open_clip's MLP width is int(width * mlp_ratio)
        raise CheckpointError(f"{where}: intermediate_size {hidden} is no ratio of {width}")
    return ratio


def preprocess_config(folder: Path) -> dict[str, Any]:
    """Mean and std of ``preprocessor_config.json`` when there is one (else open_clip's
    defaults, which are OpenAI's, as transformers' CLIPImageProcessor's are)."""
    path = folder / PROCESSOR
    if not path.is_file():
        return {}
    try:
        processor = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file ({e})") from e
    found = {}
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        if isinstance(processor.get(theirs), list):
            found[ours] = tuple(float(v) for v in processor[theirs])
    return found


def describe(layout: Layout) -> dict[str, str]:
    """The checkpoint metadata clipsharp gives a transformers checkpoint it reads."""
    where = str(layout.config_path)
    config = {"model_cfg": model_config(layout.config, where)}
    preprocess = preprocess_config(layout.folder)
    if preprocess:
        config["preprocess_cfg"] = preprocess
    return {
        "clipsharp.model_config": json.dumps(config, sort_keys=True),
        "clipsharp.format": FORMAT,
        "clipsharp.transformers_config": layout.config_path.read_text(encoding="utf-8"),
    }


def to_open_clip(tensors: Mapping[str, torch.Tensor], where: str | Path) -> dict[str, torch.Tensor]:
    """transformers CLIPModel keys -> open_clip CLIP keys.

    q, k and v projections (each (W, W) / (W,)) are stacked into ``in_proj_weight``
    (3W, W) / ``in_proj_bias`` (3W,), as ``nn.MultiheadAttention`` holds them; the
    projections are transposed; ``position_ids`` buffers are dropped.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if DROPPED.fullmatch(key):
            continue
        qkv = QKV.fullmatch(key)
        if qkv:
            block = _rename(qkv["block"], NAMES)
            parts.setdefault((block, qkv["kind"]), {})[qkv["part"]] = tensor
            continue
        name = _rename_key(key, NAMES, BLOCK_NAMES)
        if name is None:
            raise CheckpointError(
                f"{where} has key {key}, which a transformers CLIPModel does not hold; "
                "is it a CLIPModel checkpoint?"
            )
        out[name] = tensor.T.contiguous() if name in TRANSPOSED else tensor
    for (block, kind), found in parts.items():
        if found.keys() != {"q", "k", "v"}:
            raise CheckpointError(
                f"{where} lacks some of the q, k, v projections of {block}; is it complete?"
            )
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([found["q"], found["k"], found["v"]])
    return out


def to_transformers(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip CLIP keys -> transformers CLIPModel keys (the inverse of :func:`to_open_clip`)."""
    inverse = tuple((b, a) for a, b in NAMES)
    inverse_block = tuple((b, a) for a, b in BLOCK_NAMES)
    out = {}
    for key, tensor in tensors.items():
        in_proj = IN_PROJ.fullmatch(key)
        if in_proj:
            block = _rename(in_proj["block"], inverse)
            for part, chunk in zip("qkv", tensor.chunk(3), strict=True):
                out[f"{block}self_attn.{part}_proj.{in_proj['kind']}"] = chunk.contiguous()
            continue
        name = _rename_key(key, inverse, inverse_block)
        if name is None:
            raise CheckpointError(
                f"key {key} has no transformers CLIPModel name; only an open_clip ViT CLIP "
                "without a stored head can be written as a transformers checkpoint"
            )
        out[name] = tensor.T.contiguous() if key in TRANSPOSED else tensor
    return out


def _rename_key(key: str, names, block_names) -> str | None:
    block = BLOCK.fullmatch(key)
    if block:
        outer, inner = _rename(block["block"], names), _rename(block["rest"], block_names)
        return None if outer is None or inner is None else outer + inner
    return _rename(key, names)


def _rename(key: str, names) -> str | None:
    for old, new in names:
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old) :]
    return None

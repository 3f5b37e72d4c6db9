"""The architecture inferred from a state_dict's shapes when nothing names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG, invoke, save_checkpoint, succeeds

from clipsharp.core.checkpoint import Checkpoint
from clipsharp.core.models import INFERRED, build_model, resolve_architecture
from clipsharp.errors import CheckpointError

# a tiny ViT CLIP whose widths are multiples of 64: heads = width / 64 holds
TINY_64 = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 1},
}


def named_state(name: str) -> dict[str, torch.Tensor]:
    """The state_dict of open_clip's ``name`` config, on the meta device (shapes only)."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config(name)
    cfg.pop("preprocess_cfg", None)
    with torch.device("meta"):
        return CLIP(**cfg).state_dict()


def inferred(tensors: dict, tmp_path: Path, **options):
    """The architecture of ``tensors`` with nothing naming it (no metadata, no config)."""
    return resolve_architecture(Checkpoint(tmp_path / "x.safetensors", tensors, {}), **options)


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-L-14"])
def test_inferred_architecture_equals_the_named_config(name, tmp_path):
    import open_clip

    state = named_state(name)
    arch = inferred(state, tmp_path)
    expected = open_clip.get_model_config(name)
    expected.pop("preprocess_cfg", None)
    assert (arch.name, arch.source, arch.model_cfg) == (name, INFERRED, expected)
    vision, text = expected["vision_cfg"], expected["text_cfg"]
    read = arch.inferred["read"]
    assert read["embed_dim"] == expected["embed_dim"]
    for field in ("width", "layers", "patch_size", "image_size"):
        assert read[f"vision.{field}"] == vision[field], field
    for field in ("context_length", "vocab_size", "width", "layers"):
        assert read[f"text.{field}"] == text[field], field
    assert arch.inferred["assumed"]["text.heads"] == f"width / 64 = {text['heads']}"
    quick = inferred(state, tmp_path, quick_gelu=True)
    assert quick.name == f"{name}-quickgelu" and quick.model_cfg["quick_gelu"] is True
    image_only = {k: v for k, v in state.items() if not k.startswith("transformer.")}
    assert inferred(image_only, tmp_path).name == name  # WiSE-FT's layout


def test_a_custom_config_is_inferred_and_builds_the_same_shapes(tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(0)
    state = CLIP(**json.loads(json.dumps(TINY_64))).state_dict()
    arch = inferred(state, tmp_path)
    assert arch.name == "custom" and arch.source == INFERRED
    built = build_model(arch).state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in state.items()}
    assert arch.model_cfg["vision_cfg"] == {**TINY_64["vision_cfg"], "head_width": 64}
    assert arch.model_cfg["text_cfg"] == {**TINY_64["text_cfg"], "mlp_ratio": 4.0}
    path = save_checkpoint(tmp_path / "tiny64.safetensors", state, config=None)
    result = succeeds("inspect", path, env={"COLUMNS": "250"})
    assert "custom (tensor shapes)" in result.stderr
    assert "inferred from tensor shapes: embed_dim 32, vision.width 64" in result.stderr
    assert "vision.heads width / 64 = 1" in result.stderr and "activation GELU" in result.stderr


def test_what_cannot_be_inferred_is_listed(tmp_path):
    with pytest.raises(CheckpointError, match="could not infer the image tower: a ResNet"):
        inferred(named_state("RN50"), tmp_path)
    with pytest.raises(CheckpointError, match=r"shapes fit ViT-H-14, ViT-H-14-quickgelu, but"):
        inferred(named_state("ViT-H-14"), tmp_path)  # its heads are 80 wide
    state = named_state("ViT-B-32")
    del state["visual.proj"], state["token_embedding.weight"]
    with pytest.raises(CheckpointError) as refused:
        inferred(state, tmp_path)
    assert "the text vocabulary" in str(refused.value)
    assert "the embedding dimension (no 2-D visual.proj)" in str(refused.value)


def test_cli_names_what_could_not_be_inferred_in_one_line(pair, tmp_path):
    from conftest import tiny_model

    path = save_checkpoint(tmp_path / "bare.safetensors", tiny_model().state_dict(), config=None)
    result = invoke("inspect", path)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "could not infer the text heads (width 32 is not a multiple of 64)" in result.stderr
    assert "pass --model NAME" in result.stderr
    assert TINY_CONFIG["text_cfg"]["width"] == 32


@pytest.mark.parametrize(
    "layout", ["WISE_FT", "MODEL_SOUPS", "TASK_VECTORS", "OPENAI", "OPEN_CLIP"]
)
def test_the_family_of_openai_weights_is_read_as_quickgelu(layout, tmp_path):
    """Shapes cannot show QuickGELU: convert takes it from the layouts fine-tuned from
    OpenAI's weights (analyses/convert.py passes ``layout.quick_gelu``)."""
    from clipsharp.core import families

    quick = getattr(families, layout).quick_gelu
    arch = inferred(named_state("ViT-B-32"), tmp_path, quick_gelu=quick)
    assert arch.name == ("ViT-B-32-quickgelu" if layout != "OPEN_CLIP" else "ViT-B-32")

"""Session fixtures: a tiny open_clip CLIP pair and small labelled datasets, made here; and
the helpers every test module shares: ``run_options`` and ``workspace`` for the library;
``invoke``, ``succeeds``, ``pair_args`` and the ``cli_report`` fixture for the command line.

Nothing downloads: HF_HUB_OFFLINE is set and HF_HOME points at a temporary folder
before `datasets` or `huggingface_hub` are imported.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
if "HF_HOME" not in os.environ:  # a private cache, removed at exit
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="clipsharp-hf-")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("NO_COLOR", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from typer.testing import CliRunner, Result  # noqa: E402

from clipsharp.cli import app  # noqa: E402
from clipsharp.options import DataOptions, EvalOptions, PathOptions, RunOptions  # noqa: E402

if TYPE_CHECKING:
    from clipsharp.core.workspace import Workspace

torch.set_num_threads(1)  # tiny models: threads cost more than they bring on 2 cores

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSNAMES = ["red", "green", "blue", "yellow"]
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]], dtype=np.float32)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A random open_clip CLIP of ``TINY_CONFIG``, in eval mode."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**json.loads(json.dumps(TINY_CONFIG))).eval()


def save_checkpoint(path: Path, tensors: dict, config: dict | None = TINY_CONFIG) -> Path:
    """``tensors`` as a safetensors file that names its architecture (``config``; None: no
    architecture in the file)."""
    metadata = {"clipsharp.model_config": json.dumps(config)} if config else {}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def fine_tune_like(state: dict, seed: int, scale: float = 0.3) -> dict:
    """The zero-shot weights with the image tower moved (text tower and scale untouched)."""
    gen = torch.Generator().manual_seed(seed)
    moved = {}
    for key, tensor in state.items():
        if key.startswith("visual.") and tensor.is_floating_point():
            noise = torch.randn(tensor.shape, generator=gen) * (tensor.std() + 1e-3) * scale
            moved[key] = tensor + noise
        else:
            moved[key] = tensor.clone()
    return moved


def coloured_images(n: int, seed: int) -> tuple[list, list[int]]:
    """n RGB 32x32 images: class k is a noisy square of colour k."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % len(CLASSNAMES)
        pixels = rng.normal(60, 30, size=(32, 32, 3))
        pixels[8:24, 8:24] = COLOURS[label] + rng.normal(0, 20, size=(16, 16, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        labels.append(label)
    return images, labels


def save_dataset(path: Path, n: int, seed: int) -> Path:
    """``coloured_images(n, seed)`` as a save_to_disk folder (Image + ClassLabel columns)."""
    import datasets

    images, labels = coloured_images(n, seed)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSNAMES)}
    )
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(
        str(path)
    )
    return path


class Counting:
    """A transform step that counts the images it is given (the decoded ones)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return image

    def __repr__(self) -> str:  # stable: the data fingerprint covers the transform's repr
        return "Counting()"


@dataclass(frozen=True)
class Pair:
    """The tiny pair's files: two checkpoints, an ID set (24 images), an OOD set (20)."""

    zero_shot: Path
    fine_tuned: Path
    in_dist: Path
    shifted: Path
    root: Path


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> Pair:
    """The tiny open_clip pair and its datasets, made once a session: read them, never
    change them (copy them first)."""
    root = tmp_path_factory.mktemp("pair")
    state = tiny_model(0).state_dict()
    zero_shot = save_checkpoint(root / "zs.safetensors", state)
    fine_tuned = save_checkpoint(root / "ft.safetensors", fine_tune_like(state, seed=1))
    in_dist = save_dataset(root / "in_dist", 24, seed=2)
    shifted = save_dataset(root / "shifted", 20, seed=3)
    return Pair(zero_shot, fine_tuned, in_dist, shifted, root)


def plain_metrics(state: dict, dataset_path) -> tuple[float, float]:
    """An independent evaluation: open_clip model + zero-shot head + a plain loop."""
    import datasets
    import open_clip
    from open_clip.model import CLIP

    model = CLIP(**TINY_CONFIG).eval()
    model.load_state_dict(state, strict=True)
    tokenizer = open_clip.SimpleTokenizer(context_length=TINY_CONFIG["text_cfg"]["context_length"])
    transform = open_clip.image_transform(32, is_train=False)
    rows = datasets.load_from_disk(str(dataset_path))
    correct, losses = 0, []
    with torch.no_grad():
        head = open_clip.build_zero_shot_classifier(
            model, tokenizer, CLASSNAMES, open_clip.OPENAI_IMAGENET_TEMPLATES
        )
        for row in rows:
            image = transform(row["image"].convert("RGB")).unsqueeze(0)
            features = F.normalize(model.encode_image(image), dim=-1)
            logits = model.logit_scale.exp() * features @ head
            label = torch.tensor([row["label"]])
            correct += int(logits.argmax(-1).item() == row["label"])
            losses.append(F.cross_entropy(logits, label).item())
    return correct / len(rows), sum(losses) / len(losses)


# A tiny transformers CLIPModel pair, saved as save_pretrained saves it (transformers: a test extra)
TEXT = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 16}  # fmt: skip
VISION = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 8}  # fmt: skip


def tiny_clip(seed: int, **config):
    """A random transformers CLIPModel of the tiny test architecture (``text``/``vision``:
    overrides of the towers' configs)."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config={**TEXT, **config.pop("text", {})},
        vision_config={**VISION, **config.pop("vision", {})},
        projection_dim=32,
        **config,
    )
    return transformers.CLIPModel(cfg).eval()


def fine_tuned_from(model, seed: int):
    """The model with its image tower and projection moved (text tower untouched)."""
    tuned = type(model)(model.config).eval()
    tuned.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in tuned.named_parameters():
            if name.startswith(("vision_model.", "visual_projection.")):
                tensor += torch.randn(tensor.shape, generator=gen) * (tensor.std() + 1e-3) * 0.3
    return tuned


@dataclass(frozen=True)
class HfPair:
    """The tiny transformers pair's folders."""

    zero_shot: Path  # save_pretrained folders
    fine_tuned: Path
    sharded: Path  # the zero-shot model, saved in shards


@pytest.fixture(scope="session")
def hf_pair(tmp_path_factory) -> HfPair:
    """The tiny transformers pair, made once a session (skipped without transformers)."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    zero_shot = tiny_clip(0)
    zero_shot.save_pretrained(root / "zs")
    zero_shot.save_pretrained(root / "zs-sharded", max_shard_size="2MB")
    fine_tuned_from(zero_shot, seed=1).save_pretrained(root / "ft")
    return HfPair(root / "zs", root / "ft", root / "zs-sharded")


# ----------------------------------------------------------------------------- references


def average_ranks(values) -> np.ndarray:
    """Ranks from 0, ties given the mean of the ranks they span (written apart from the
    library's, as a reference)."""
    values = np.asarray(values, dtype=float)
    ranks = np.empty(len(values))
    for v in np.unique(values):
        where = np.flatnonzero(values == v)
        ranks[where] = np.argsort(np.argsort(values))[where].mean()
    return ranks


def reference_spearman(x, y) -> float | None:
    """Spearman's rho as Pearson's r of the average ranks; None when one side is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


# ----------------------------------------------------------------------------- the library


def run_options(alphas=(0.0, 0.5, 1.0), **evaluation) -> RunOptions:
    """The options of a run on the CPU: default data options, ``EvalOptions(device="cpu",
    **evaluation)`` and a path through ``alphas``."""
    return RunOptions(
        DataOptions(), EvalOptions(device="cpu", **evaluation), PathOptions(alphas=alphas)
    )


def workspace(
    pair: Pair, options: RunOptions | None = None, *, checkpoints=None, datasets=None, model=None
) -> Workspace:
    """``open_workspace`` on the tiny pair, with the data and evaluation options of
    ``options`` (default: ``run_options()``).

    ``checkpoints``: roles -> files (default: the pair's zero-shot and fine-tuned files);
    ``datasets``: (folder, role) pairs (default: the shifted set, as OOD).
    """
    from clipsharp.core.workspace import open_workspace
    from clipsharp.data.specs import DatasetSpec

    options = options or run_options()
    checkpoints = checkpoints or {"zero_shot": pair.zero_shot, "fine_tuned": pair.fine_tuned}
    datasets = datasets or [(pair.shifted, "ood")]
    return open_workspace(
        checkpoints,
        [DatasetSpec.parse(str(folder), role=role) for folder, role in datasets],
        data=options.data,
        evaluation=options.eval,
        model=model,
    )


# ----------------------------------------------------------------------------- the command line


def invoke(*args, **kwargs) -> Result:
    """``clipsharp ARGS`` run in this process by typer's CliRunner (arguments may be paths;
    ``kwargs`` go to ``CliRunner.invoke``, e.g. ``env``). The result's stdout and stderr are
    kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def succeeds(*args, **kwargs) -> Result:
    """``invoke``, asserting that the command exits 0 (its output is the failure message)."""
    result = invoke(*args, **kwargs)
    assert result.exit_code == 0, result.output
    return result


def pair_args(pair: Pair, *extra) -> list:
    """The tiny pair on the command line: both checkpoints, the ID and the OOD set, on the
    CPU; then ``extra``."""
    return [pair.zero_shot, pair.fine_tuned, "--id", pair.in_dist, "--ood", pair.shifted,
            "--device", "cpu", *extra]  # fmt: skip


WIDE = {"COLUMNS": "250"}  # a terminal wide enough that no table is cut


@pytest.fixture(scope="session")
def cli_report(tmp_path_factory):
    """``cli_report(*args)``: the report ``clipsharp ARGS -o FILE`` writes, as (FILE, the
    command's result), run in a ``WIDE`` terminal. Each argument list runs once a session and
    its file is shared by every test that asks for it: read it, never change it."""
    root = tmp_path_factory.mktemp("cli-reports")
    made: dict[tuple[str, ...], tuple[Path, Result]] = {}

    def report(*args) -> tuple[Path, Result]:
        key = tuple(map(str, args))
        if key not in made:
            path = root / f"{len(made)}-{key[0]}.json"
            made[key] = (path, succeeds(*key, "-o", path, env=WIDE))
        return made[key]

    return report

"""Bundled data and a tiny CLIP pair for ``clipsharp demo``: nothing is downloaded.

The UCI handwritten digits (``assets/digits.npz``) are split into training and
held-out digits. The held-out digits as they are form the in-distribution (ID)
set; the same digits colour-inverted (black on white) form the shifted (OOD) set.

A tiny open_clip ViT CLIP is pretrained from scratch on the training digits
against caption prototypes from its text tower, under broad variation (rotation,
inversion, contrast, noise): the "zero-shot" model. Copies are fine-tuned, image tower
only, with cross-entropy against the frozen zero-shot head on the training digits: a
careful one (a moderate learning rate; 2 % of its images colour-inverted, a little of the
shift, as real fine-tuning sets hold a little of everything), an aggressive one (a high
learning rate, clean digits only), and four more on clean digits at learning rates in
between (the demo's study: gains from success to failure).
Bit-identical for a given seed on any number of threads (one thread and deterministic
kernels while building, seeded generators, sorted metadata); cached under one folder
(see ``docs/demo.md``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import __version__
from ..data.sources import quiet_datasets
from ..errors import ConfigError
from ..files import write_atomic
from ..progress import Event, Progress

if TYPE_CHECKING:
    from PIL import Image

CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ASSET = Path(__file__).parent / "assets" / "digits.npz"


@dataclass(frozen=True)
class DemoRecipe:
    """Hyper-parameters of the demo data and of the tiny CLIP pair."""

    num_train: int = 1200  # digits used for training; the rest form the evaluation sets
    image_size: int = 16  # stored PNG size and model input size (px)
    patch_size: int = 4  # ViT patch size (px)
    vision_width: int = 64  # image-tower width
    vision_layers: int = 3  # image-tower transformer blocks
    text_width: int = 64  # text-tower width
    text_layers: int = 2  # text-tower transformer blocks
    embed_dim: int = 64  # shared embedding size
    context_length: int = 16  # text tokens; the longest OpenAI template needs 12
    shift_rotation: float = 0.0  # OOD shift: rotation in degrees (counter-clockwise) ...
    shift_invert: bool = True  # ... then colour inversion
    batch_size: int = 128  # images per training step
    pretrain_steps: int = 400  # zero-shot pretraining steps: short, so fine-tuning has room
    pretrain_lr: float = 2e-3  # peak AdamW learning rate of pretraining (warm-up, cosine)
    templates_per_step: int = 8  # OpenAI templates averaged into each class prototype per step
    max_rotation: float = 45.0  # pretraining augmentation: uniform rotation in ±degrees
    invert_prob: float = 0.5  # pretraining augmentation: probability of colour inversion
    contrast_range: float = 0.5  # pretraining augmentation: contrast in [1 - r, 1]
    noise_std: float = 0.1  # pretraining augmentation: Gaussian pixel noise
    finetune_steps: int = 200  # steps of each fine-tuning run (no augmentation)
    finetune_lrs: tuple[tuple[str, float], ...] = (  # (name, lr): one fine-tune each
        ("careful", 7e-4),
        ("lr2e-4", 2e-4),
        ("lr5e-4", 5e-4),
        ("lr1e-3", 1e-3),
        ("lr3e-3", 3e-3),
        ("aggressive", 1e-2),
    )
    # (name, p): that fine-tune sees each training image colour-inverted with probability p;
    # the others see clean digits only
    finetune_invert: tuple[tuple[str, float], ...] = (("careful", 0.02),)
    weight_decay: float = 0.1  # AdamW weight decay, pretraining and fine-tuning

    @classmethod
    def tiny(cls) -> DemoRecipe:
        """A recipe that builds in a few seconds (for tests): same data, toy training."""
        sizes = {"vision_width": 16, "vision_layers": 1, "text_width": 16, "text_layers": 1}
        steps = {"pretrain_steps": 4, "finetune_steps": 3, "templates_per_step": 2}
        return cls(embed_dim=16, batch_size=32, **sizes, **steps)

    def model_config(self) -> dict:
        """The open_clip model config (``open_clip.model.CLIP(**config)``)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
                "head_width": 32 if self.vision_width % 32 == 0 else self.vision_width,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": max(1, self.text_width // 32),
                "layers": self.text_layers,
            },
        }

    def fingerprint(self, seed: int) -> str:
        """Hash of everything that determines the built files."""
        payload = json.dumps({"recipe": asdict(self), "seed": seed, "version": __version__})
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class DemoArtifacts:
    """Paths of a built (or cached) demo."""

    root: Path
    zero_shot: Path
    fine_tuned: dict[str, Path]  # {"careful": ..., "lr2e-4": ..., ..., "aggressive": ...}
    in_dist: Path  # save_to_disk folder of the held-out digits as they are
    shifted: Path  # save_to_disk folder of the held-out digits, shifted
    built: bool  # False when everything came from the cache


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits: images (1797, 8, 8) uint8 in 0..16 and labels (1797,) in 0..9."""
    with np.load(ASSET) as bundle:
        return bundle["images"], bundle["labels"].astype(np.int64)


def split_digits(num_digits: int, num_train: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed shuffle (independent of the training seed): training and held-out indices."""
    order = np.random.default_rng(0).permutation(num_digits)
    return np.sort(order[:num_train]), np.sort(order[num_train:])


def render_digit(
    digit: np.ndarray, size: int, rotation: float = 0.0, invert: bool = False
) -> Image.Image:
    """One 8×8 digit (0..16) as a grayscale PIL image of ``size`` px, optionally shifted."""
    from PIL import Image, ImageOps

    pixels = np.round(digit.astype(np.float32) * (255 / 16)).astype(np.uint8)
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)
    if rotation:
        image = image.rotate(rotation, resample=Image.Resampling.BILINEAR, fillcolor=0)
    return ImageOps.invert(image) if invert else image


def write_eval_set(path: Path, images: list[Image.Image], labels: np.ndarray) -> None:
    """Write images and labels as a ``datasets`` folder (PNG images, word class names)."""
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSNAMES))}
    )
    table = datasets.Dataset.from_dict({"image": images, "label": labels.tolist()}, features)
    with quiet_datasets():  # the library prints nothing
        write_atomic(path, lambda staging: table.save_to_disk(str(staging)), folder=True)


def pixel_tensors(images: list[Image.Image], image_size: int) -> Tensor:
    """Images through the evaluation transform, before normalisation: (N, 3, H, W) in [0, 1]."""
    import open_clip

    transform = open_clip.image_transform(
        image_size, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3
    )
    return torch.stack([transform(image.convert("RGB")) for image in images])


def mean_std() -> tuple[Tensor, Tensor]:
    """OpenAI's per-channel mean and std, shaped (1, 3, 1, 1)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return (
        torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1),
        torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1),
    )


def normalize(pixels: Tensor) -> Tensor:
    """OpenAI mean/std normalisation, the last step of ``open_clip.image_transform``."""
    mean, std = mean_std()
    return (pixels - mean) / std


def augment(pixels: Tensor, recipe: DemoRecipe, generator: torch.Generator) -> Tensor:
    """Broad variation for pretraining: rotation, contrast, inversion, noise. (B, 3, H, W)."""
    batch = pixels.shape[0]
    uniform = torch.rand(batch, 4, generator=generator)
    angle = (2 * uniform[:, 0] - 1) * math.radians(recipe.max_rotation)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros(batch)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(batch, 2, 3)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    rotated = F.grid_sample(pixels, grid, align_corners=False)
    contrast = 1 - recipe.contrast_range * uniform[:, 1].view(batch, 1, 1, 1)
    varied = rotated * contrast
    inverted = (uniform[:, 2] < recipe.invert_prob).view(batch, 1, 1, 1)
    varied = torch.where(inverted, 1 - varied, varied)
    noise = recipe.noise_std * torch.randn(pixels.shape, generator=generator)
    return (varied + noise).clamp(0, 1)


def caption_tokens(recipe: DemoRecipe) -> Tensor:
    """Every OpenAI template filled with every class name: (templates, classes, context)."""
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as TEMPLATES

    tokenizer = open_clip.SimpleTokenizer(context_length=recipe.context_length)
    captions = [template(name) for template in TEMPLATES for name in CLASSNAMES]
    return tokenizer(captions).view(len(TEMPLATES), len(CLASSNAMES), -1)


def class_prototypes(model, tokens: Tensor) -> Tensor:
    """Zero-shot head from a subset of templates, as open_clip builds it: (embed_dim, classes)."""
    templates, classes, context = tokens.shape
    text = model.encode_text(tokens.reshape(-1, context), normalize=True)
    return F.normalize(text.view(templates, classes, -1).mean(dim=0), dim=-1).T


def adamw(parameters: list, lr: float, recipe: DemoRecipe) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on gains, biases, logit_scale)."""
    decay = [p for p in parameters if p.ndim >= 2]
    rest = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)


def cosine_lr(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def batches(count: int, steps: int, size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` batches of indices, by reshuffling every epoch (no replacement within one)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < size:
            order = torch.cat([order, torch.randperm(count, generator=generator)])
        yield order[:size]
        order = order[size:]


@dataclass(frozen=True)
class Run:
    """What every training stage shares: the recipe, the seed, the progress callback."""

    recipe: DemoRecipe
    seed: int
    progress: Progress | None

    def train(self, model, parameters: list, loss_fn, lr: float, steps: int, stage: str) -> None:
        """AdamW on ``parameters`` over ``loss_fn() -> loss``: warm-up, then cosine decay."""
        optimizer = adamw(parameters, lr, self.recipe)
        warmup = max(1, steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_lr(step, steps, warmup)
        )
        model.train()
        for step in range(steps):
            loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if model.logit_scale.requires_grad:
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
            if self.progress is not None:
                self.progress(Event(stage, step + 1, steps, unit="steps"))
        model.eval()


def pretrain(model, pixels: Tensor, labels: Tensor, run: Run) -> None:
    """Zero-shot pretraining: augmented images against caption prototypes of their class.

    ``pixels`` (N, 3, H, W) in [0, 1], ``labels`` (N,). Both towers and logit_scale learn.
    """
    recipe = run.recipe
    tokens = caption_tokens(recipe)
    generator = torch.Generator().manual_seed(run.seed)
    order = batches(len(labels), recipe.pretrain_steps, recipe.batch_size, generator)

    def loss_fn() -> Tensor:
        index = next(order)
        images = normalize(augment(pixels[index], recipe, generator))
        chosen = torch.randperm(tokens.shape[0], generator=generator)[: recipe.templates_per_step]
        head = class_prototypes(model, tokens[chosen])  # (embed_dim, classes)
        features = model.encode_image(images, normalize=True)  # (B, embed_dim)
        return F.cross_entropy(model.logit_scale.exp() * features @ head, labels[index])

    # The token embeddings keep their random initialisation: the captions use a few hundred
    # of the 49,408 rows, and AdamW over all of them would cost most of every step.
    model.token_embedding.weight.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    lr, steps = recipe.pretrain_lr, recipe.pretrain_steps
    run.train(model, parameters, loss_fn, lr, steps, "pretrain")


def invert_normalized(images: Tensor) -> Tensor:
    """Colour inversion of normalised images: ``normalize(1 - x)`` from ``normalize(x)``."""
    mean, std = mean_std()
    return (1 - 2 * mean) / std - images


def fine_tune(model, head: Tensor, images, labels, lr: float, name: str, run: Run) -> None:
    """Image tower only, cross-entropy against the frozen zero-shot ``head`` (embed_dim, classes).

    ``images`` (N, 3, H, W) normalised exactly as evaluation does, ``labels`` (N,). No
    augmentation, except that a fine-tune named in ``finetune_invert`` sees each image
    colour-inverted with its probability (drawn by a generator seeded with ``seed + 2``).
    """
    for key, parameter in model.named_parameters():
        parameter.requires_grad_(key.startswith("visual."))
    generator = torch.Generator().manual_seed(run.seed + 1)  # the same batches for every lr
    order = batches(len(labels), run.recipe.finetune_steps, run.recipe.batch_size, generator)
    scale = model.logit_scale.detach().exp()
    invert = dict(run.recipe.finetune_invert).get(name, 0.0)
    inverted = invert_normalized(images) if invert else images
    flips = torch.Generator().manual_seed(run.seed + 2)

    def loss_fn() -> Tensor:
        index = next(order)
        batch = images[index]
        if invert:
            flip = torch.rand(len(index), generator=flips) < invert
            batch = torch.where(flip.view(-1, 1, 1, 1), inverted[index], batch)
        features = model.encode_image(batch, normalize=True)  # (B, embed_dim)
        return F.cross_entropy(scale * features @ head, labels[index])

    parameters = list(model.visual.parameters())
    run.train(model, parameters, loss_fn, lr, run.recipe.finetune_steps, f"fine-tune {name}")


def save_checkpoint(
    model, path: Path, recipe: DemoRecipe, operation: str, parameters: dict
) -> None:
    """The full state_dict as safetensors with clipsharp metadata, written atomically."""
    from safetensors.torch import save

    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    metadata = {
        "clipsharp.model_config": json.dumps(recipe.model_config()),
        "clipsharp.version": __version__,
        "clipsharp.operation": operation,
        "clipsharp.parameters": json.dumps(parameters),
    }
    data = sorted_metadata(save(tensors, metadata=metadata))
    write_atomic(path, lambda staging: staging.write_bytes(data))


def sorted_metadata(data: bytes) -> bytes:
    """A safetensors file with its metadata keys sorted: the same tensors give the same bytes.

    safetensors writes ``__metadata__`` in hash order, which changes from process to process.
    The header (8-byte little-endian length, then JSON padded with spaces) keeps its length.
    """
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > length:  # cannot happen: the same keys and values, reordered
        raise ValueError("safetensors header grew when its metadata was sorted")
    return data[:8] + text.ljust(length) + data[8 + length :]


def artifacts(root: Path, recipe: DemoRecipe, built: bool) -> DemoArtifacts:
    """Where every file of the demo lives under ``root``."""
    return DemoArtifacts(
        root=root,
        zero_shot=root / "zero_shot.safetensors",
        fine_tuned={
            name: root / f"fine_tuned_{name}.safetensors" for name, _ in recipe.finetune_lrs
        },
        in_dist=root / "data" / "in_dist",
        shifted=root / "data" / "shifted",
        built=built,
    )


RECORD = "demo.json"  # the demo's marker: a JSON object with a "recipe_hash" key


def demo_record(root: Path) -> dict | None:
    """The record of a clipsharp demo folder: ``root/demo.json``, a JSON object holding
    ``recipe_hash`` (null while the demo is being built); None when ``root`` has none."""
    try:
        record = json.loads((root / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "recipe_hash" in record else None


def check_demo_folder(root: Path, flag: str = "--out") -> None:
    """Refuse a folder that exists, is not empty and is not a clipsharp demo folder: the
    demo replaces its own files in it, and would replace a user's of the same names."""
    if not root.is_dir() or demo_record(root) is not None:
        return
    found = sorted(path.name for path in root.iterdir())
    if not found:
        return
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise ConfigError(
        f"{flag} {root} holds {shown} and is not a clipsharp demo folder (it has no {RECORD} "
        f"with a recipe_hash); choose a path for {flag} that is new, empty or a demo folder"
    )


def is_cached(found: DemoArtifacts, fingerprint: str) -> bool:
    """True when ``demo.json`` records this recipe and every file exists."""
    record = demo_record(found.root)
    paths = [found.zero_shot, *found.fine_tuned.values(), found.in_dist, found.shifted]
    return (
        record is not None
        and record["recipe_hash"] == fingerprint
        and all(path.exists() for path in paths)
    )


def write_data(found: DemoArtifacts, recipe: DemoRecipe) -> tuple[Tensor, Tensor]:
    """Write the ID and OOD evaluation sets; return the training pixels (N, 3, H, W) and labels."""
    digits, labels = load_digits()
    train_index, held_out = split_digits(len(labels), recipe.num_train)
    size, shift = recipe.image_size, (recipe.shift_rotation, recipe.shift_invert)
    found.in_dist.parent.mkdir(parents=True, exist_ok=True)
    for path, variant in [(found.in_dist, (0.0, False)), (found.shifted, shift)]:
        images = [render_digit(digit, size, *variant) for digit in digits[held_out]]
        write_eval_set(path, images, labels[held_out])
    train_images = [render_digit(digit, size) for digit in digits[train_index]]
    return pixel_tensors(train_images, size), torch.from_numpy(labels[train_index])


def build_models(found: DemoArtifacts, pixels: Tensor, labels: Tensor, run: Run) -> None:
    """Pretrain the zero-shot model, fine-tune one copy per learning rate, save them all."""
    import copy

    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    recipe = run.recipe
    with torch.random.fork_rng(devices=[]):  # seeds the initialisation, restores the global RNG
        torch.manual_seed(run.seed)
        zero_shot = open_clip.model.CLIP(**recipe.model_config())
    pretrain(zero_shot, pixels, labels, run)
    provenance = asdict(recipe) | {"seed": run.seed}
    save_checkpoint(zero_shot, found.zero_shot, recipe, "demo-pretrain", provenance)
    tokenizer = open_clip.SimpleTokenizer(context_length=recipe.context_length)
    head = open_clip.build_zero_shot_classifier(
        zero_shot, tokenizer, CLASSNAMES, templates=OPENAI_IMAGENET_TEMPLATES
    )
    for name, lr in recipe.finetune_lrs:
        model = copy.deepcopy(zero_shot)
        fine_tune(model, head, normalize(pixels), labels, lr, name, run)
        details = provenance | {"name": name, "lr": lr}
        save_checkpoint(model, found.fine_tuned[name], recipe, "demo-finetune", details)


@contextmanager
def deterministic_torch(threads: int = 1) -> Iterator[None]:
    """Fixed intra-op threads and deterministic kernels while building; both restored after.

    Float sums are split across threads, so their rounding depends on the thread count:
    one thread makes every reduction run in one fixed order, on any number of cores.
    """
    saved_threads = torch.get_num_threads()
    saved_mode = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved_mode, warn_only=saved_warn)
        torch.set_num_threads(saved_threads)


def build_demo(
    root: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    seed: int = 0,
    recipe: DemoRecipe | None = None,
) -> DemoArtifacts:
    """Build (or find cached) the demo data and tiny CLIP pair under ``root``.

    Args:
        root: folder for everything (created if missing).
        force: rebuild even when ``root/demo.json`` matches the recipe.
        progress: called with an :class:`Event` per training step of each stage.
        seed: seeds model initialisation, augmentation and batch order.
        recipe: hyper-parameters; ``DemoRecipe()`` when None.

    Returns:
        The paths; ``built`` is False when everything came from the cache.

    Raises:
        ConfigError: ``root`` exists, is not empty and is not a demo folder (see
            :func:`check_demo_folder`).
    """
    recipe = recipe or DemoRecipe()
    root = Path(root)
    check_demo_folder(root)
    fingerprint = recipe.fingerprint(seed)
    if not force and is_cached(artifacts(root, recipe, built=False), fingerprint):
        return artifacts(root, recipe, built=False)
    found = artifacts(root, recipe, built=True)
    root.mkdir(parents=True, exist_ok=True)
    write_record(root, None, seed, recipe)  # marks the folder, matches no recipe until built
    with deterministic_torch():
        pixels, labels = write_data(found, recipe)
        build_models(found, pixels, labels, Run(recipe, seed, progress))
    write_record(root, fingerprint, seed, recipe)
    return found


def write_record(root: Path, fingerprint: str | None, seed: int, recipe: DemoRecipe) -> None:
    """``root/demo.json``: the recipe hash (None while building), seed, version, recipe."""
    record = {"recipe_hash": fingerprint, "seed": seed, "clipsharp_version": __version__}
    text = json.dumps(record | {"recipe": asdict(recipe)}, indent=2)
    write_atomic(root / RECORD, lambda staging: staging.write_text(text, encoding="utf-8"))

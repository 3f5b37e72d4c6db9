"""Perturbing the working model's weights: which tensors, noise drawn from (seed, draw),
and an exact restore by copy."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..options import SharpnessOptions
from .layers import layer_groups, select_layers
from .models import SCALE_KEYS, ClipClassifier, is_image_key, is_text_key

NOISE_BYTES = 1 << 30  # noise draws kept between blocks on a CPU; more are regenerated


def perturbed_keys(classifier: ClipClassifier, options: SharpnessOptions) -> list[str]:
    """The parameters delta moves, in the model's state_dict order.

    The image tower; ``logit_scale`` and a stored head with ``include_head``; the text
    tower with ``include_text``; restricted to ``layers``, less those matching ``exclude``.
    """
    parameters = {name for name, _ in classifier.model.named_parameters()}
    if classifier.head is not None:
        parameters |= {"head.weight", "head.bias"}
    keys = [k for k in classifier.tensors if k in parameters and _perturbable(k, options)]
    if options.layers:
        keys = restrict_to_layers(keys, options.layers)
    if options.exclude:
        try:
            pattern = re.compile(options.exclude)
        except re.error as e:
            raise ConfigError(f"--exclude {options.exclude!r} is not a valid regex ({e})") from e
        keys = [k for k in keys if not pattern.search(k)]
    if not keys:
        raise ConfigError("nothing left to perturb; loosen --exclude or --layers")
    return keys


def _perturbable(key: str, options: SharpnessOptions) -> bool:
    if is_image_key(key):
        return True
    if key in SCALE_KEYS or key.startswith("head."):
        return options.include_head
    return options.include_text and is_text_key(key)


def restrict_to_layers(keys: Sequence[str], spec: str) -> list[str]:
    """The keys of the layer groups named by ``spec`` (comma list of names or globs)."""
    groups = layer_groups(keys)
    try:
        chosen = select_layers(groups, spec)
    except ConfigError as e:
        raise ConfigError(f"{e} (--include-text and --include-head add more)") from e
    kept = {key for group in chosen for key in groups[group]}
    return [key for key in keys if key in kept]


class Perturbation:
    """Writes w + |w| * u into the live tensors of ``keys``; restores w exactly, by copy.

    A context manager: on entry the weights are cloned; on exit, also on error or Ctrl-C,
    every tensor is copied back from the clone.
    """

    def __init__(self, classifier: ClipClassifier, keys: Sequence[str]):
        self.classifier = classifier
        self.keys = list(keys)
        self.original: dict[str, torch.Tensor] = {}

    def __enter__(self) -> Perturbation:
        return self.save()

    def save(self) -> Perturbation:
        """Clone the weights that ``restore`` copies back."""
        self.original = {key: self.classifier.tensors[key].clone() for key in self.keys}
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def magnitude(self, key: str) -> torch.Tensor:
        """|w| in fp32: the scale of the adaptive perturbation."""
        return self.original[key].float().abs()

    @torch.no_grad()
    def write(self, u: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Write w + |w| * u for each (key, u) pair (fp32 maths, one rounding into the model)."""
        for key, value in u:
            w = self.original[key].float()
            self.classifier.tensors[key].copy_(w + w.abs() * value)

    @torch.no_grad()
    def restore(self) -> None:
        for key, w in self.original.items():
            self.classifier.tensors[key].copy_(w)


def noise_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator of noise draw ``draw``: a function of (seed, draw) alone."""
    entropy = [seed & 0xFFFF_FFFF_FFFF_FFFF, draw]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class NoiseBank:
    """Unit normals of draw k for a set of keys, from ``noise_generator(seed, k)``, drawn on
    the CPU in the order of the sorted keys (so the same on every device and rank).

    The engine needs a draw once per block: draws are kept on the device while they fit in
    ``budget`` bytes (the first ones), the others are drawn again when needed.
    """

    def __init__(self, classifier: ClipClassifier, seed: int, budget: int | None = None):
        self.classifier, self.seed = classifier, seed
        self.budget = _noise_budget(classifier.device) if budget is None else budget
        self.kept: dict[tuple, dict[str, torch.Tensor]] = {}
        self.held = 0

    def unit(self, keys: Sequence[str], draw: int) -> dict[str, torch.Tensor]:
        """{key: N(0, I) of the key's shape} for the sorted ``keys``, on the device."""
        name = (tuple(sorted(keys)), draw)
        if name in self.kept:
            return self.kept[name]
        generator = noise_generator(self.seed, draw)
        tensors = self.classifier.tensors
        unit = {
            key: torch.randn(tensors[key].shape, generator=generator).to(self.classifier.device)
            for key in name[0]
        }
        size = sum(z.numel() * z.element_size() for z in unit.values())
        if self.held + size <= self.budget:
            self.kept[name], self.held = unit, self.held + size
        return unit


def _noise_budget(device: torch.device) -> int:
    """NOISE_BYTES on a CPU; a quarter of the free memory of a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    return NOISE_BYTES

"""Two fixed costs the engine cut, each against what it replaced, in one process.

- Model build: open_clip's constructor with its random initialisation, against the same
  constructor with ``torch.nn.init`` switched off (``models._without_random_init``: every
  weight is loaded from the checkpoint right after).
- Batch stacking: ``torch.stack`` of 128 decoded 224-px crops as ``pil_to_tensor`` gives
  them (strided views, stacked on the intra-op threads), against ``stream._collate``'s
  numpy stack of the pixels as they lie plus one contiguous copy.

    .venv/bin/python benchmarks/startup.py            # a few seconds
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch


def best(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    import open_clip
    from open_clip.model import CLIP
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from clipsharp.core.models import _without_random_init
    from clipsharp.data.stream import ImageSource

    config = open_clip.get_model_config("ViT-B-32")

    def plain() -> None:
        CLIP(**json.loads(json.dumps(config)))

    def uninitialised() -> None:
        with _without_random_init():
            CLIP(**json.loads(json.dumps(config)))

    rng = np.random.default_rng(0)
    crops = [
        pil_to_tensor(Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)))
        for _ in range(128)
    ]
    items = [(i, crop, None) for i, crop in enumerate(crops)]
    collate = ImageSource._collate.__get__(ImageSource.__new__(ImageSource))
    rows = [
        ("ViT-B-32 build", best(plain), best(uninitialised)),
        ("stack 128 crops", best(lambda: torch.stack(crops)),
         best(lambda: collate(items).contiguous())),
    ]  # fmt: skip
    print(f"torch threads {torch.get_num_threads()}; best of 3")
    print(f"{'':18}{'before s':>10}{'now s':>10}{'ratio':>8}")
    for name, before, now in rows:
        print(f"{name:18}{before:10.3f}{now:10.3f}{now / before:8.2f}")


if __name__ == "__main__":
    main()

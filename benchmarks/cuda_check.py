"""`--device cuda` gives the CPU's numbers: every analysis on a tiny pair, on both devices.

Builds a tiny random open_clip pair (``synthetic.write_pair``) and two small datasets in a
temporary folder, runs interpolate, layerwise (prefix cache on and off), sharpness
(average and worst) and stragglers through the library on the CPU and on the GPU, and
compares: accuracies and counts equal, losses and sharpness within float tolerance (GPU
kernels round differently). Also runs a bf16 working model on the GPU. Prints one line
per check and exits 1 if any differs. Nothing is downloaded.

    python benchmarks/cuda_check.py            # about a minute on a GPU machine
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from synthetic import write_pair

CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ["red", "green", "blue", "yellow"]


def make_dataset(path: Path, n: int, seed: int) -> Path:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
    images, labels = [], []
    for i in range(n):
        pixels = rng.normal(60, 30, size=(32, 32, 3))
        pixels[8:24, 8:24] = colours[i % 4] + rng.normal(0, 20, size=(16, 16, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        labels.append(i % 4)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    )
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(
        str(path)
    )
    return path


def reports(zs: Path, ft: Path, data: list[Path], device: str, precision: str = "fp32") -> dict:
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.analyses.layerwise import run_layerwise
    from clipsharp.analyses.sharpness import run_sharpness
    from clipsharp.analyses.stragglers import run_stragglers
    from clipsharp.core.workspace import Inputs
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import (
        DataOptions,
        EvalOptions,
        LayerwiseOptions,
        PathOptions,
        RunOptions,
        SharpnessOptions,
        StragglerOptions,
    )

    specs = (DatasetSpec.parse(str(data[0]), "id"), DatasetSpec.parse(str(data[1]), "ood"))
    inputs = Inputs({"zero_shot": zs, "fine_tuned": ft}, specs)
    evaluation = EvalOptions(device=device, batch_size=8, precision=precision, block_images=16)
    options = RunOptions(DataOptions(), evaluation, PathOptions(alphas=(0.0, 0.5, 1.0)))
    average = SharpnessOptions(rhos=(0.2,), iterations=3)
    return {
        "interpolate": run_interpolation(inputs, options).to_dict(),
        "layerwise": run_layerwise(inputs, options, LayerwiseOptions()).to_dict(),
        "layerwise-full": run_layerwise(
            inputs, options, LayerwiseOptions(prefix_cache=False)
        ).to_dict(),
        "sharpness": run_sharpness(inputs, options, average).to_dict(),
        "worst": run_sharpness(
            inputs, options, SharpnessOptions(kind="worst", rhos=(0.2,), iterations=3)
        ).to_dict(),
        "stragglers": run_stragglers(inputs, options, average, StragglerOptions(top_k=1)).to_dict(),
    }


def numbers(node, path=""):
    """(path, value) of every number under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from numbers(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def compare(name: str, cpu: dict, gpu: dict, rtol: float) -> bool:
    ours = dict(numbers(gpu["results"]))
    worst, where = 0.0, ""
    for path, value in numbers(cpu["results"]):
        other = ours.get(path)
        if other is None:
            print(f"  {name}: {path} missing on cuda")
            return False
        if isinstance(value, int) and "num_examples" in path and value != other:
            print(f"  {name}: {path} {value} != {other}")
            return False
        gap = abs(value - other) / max(1.0, abs(value))
        if gap > worst:
            worst, where = gap, path
    ok = worst <= rtol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: largest relative gap {worst:.2e} at {where or '-'}")
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zs, ft = write_pair(CONFIG, root)
        data = [make_dataset(root / "in_dist", 40, 2), make_dataset(root / "shifted", 36, 3)]
        started = time.perf_counter()
        cpu = reports(zs, ft, data, "cpu")
        middle = time.perf_counter()
        gpu = reports(zs, ft, data, "cuda")
        print(f"cpu {middle - started:.1f} s, cuda {time.perf_counter() - middle:.1f} s")
        ok = all(compare(name, cpu[name], gpu[name], 2e-3) for name in cpu)
        same = gpu["layerwise"]["results"] == gpu["layerwise-full"]["results"]
        print(
            f"{'ok  ' if same else 'FAIL'} cuda layerwise: prefix cache bit-identical to full"
            " forwards"
        )
        bf16 = reports(zs, ft, data, "cuda", "bf16")
        ok_bf16 = compare("interpolate bf16 vs fp32", cpu["interpolate"], bf16["interpolate"], 0.05)
        return 0 if ok and same and ok_bf16 else 1


if __name__ == "__main__":
    sys.exit(main())

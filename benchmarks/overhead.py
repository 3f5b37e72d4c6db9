"""clipsharp's overhead against the cost of its forward passes (DESIGN §6).

Each analysis is timed in the same process as a baseline that does only the
forward passes the analysis needs (a plain open_clip model, weights loaded
with ``load_state_dict``, a plain batch loop). Printed: seconds and the ratio
analysis / baseline; a ratio near 1.0 means clipsharp adds little beyond the
forward passes themselves. Also: fp32 against bf16 working models.

    .venv/bin/python benchmarks/overhead.py                 # CPU, about a minute
    .venv/bin/python benchmarks/overhead.py --device cuda --width 768 --layers 12 --images 2048

Nothing is downloaded: the model is a random open_clip ViT of the given size and
the data are random images written as a save_to_disk folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=128, help="image-tower width")
    parser.add_argument("--layers", type=int, default=3, help="image-tower blocks")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--alphas", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=4, help="sharpness noise draws")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args()


def model_config(args) -> dict:
    return {
        "embed_dim": 128,
        "vision_cfg": {
            "image_size": args.image_size,
            "layers": args.layers,
            "width": args.width,
            "patch_size": 8,
            "head_width": 64,
        },  # fmt: skip
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 128,
            "heads": 2,
            "layers": 2,
        },  # fmt: skip
    }


def build_inputs(args, root: Path) -> tuple[Path, Path, Path, dict]:
    import datasets
    from open_clip.model import CLIP
    from PIL import Image
    from safetensors.torch import save_file

    config = model_config(args)
    torch.manual_seed(0)
    zero_shot = CLIP(**json.loads(json.dumps(config))).state_dict()
    fine_tuned = {
        k: v + 0.05 * v.std() * torch.randn_like(v) if k.startswith("visual.") else v.clone()
        for k, v in zero_shot.items()
    }
    meta = {"clipsharp.model_config": json.dumps(config)}
    save_file(zero_shot, str(root / "zs.safetensors"), metadata=meta)
    save_file(fine_tuned, str(root / "ft.safetensors"), metadata=meta)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (args.image_size,) * 2 + (3,), dtype=np.uint8))
        for _ in range(args.images)
    ]
    labels = [i % 10 for i in range(args.images)]
    names = [f"class {i}" for i in range(10)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(
        str(root / "data")
    )
    return root / "zs.safetensors", root / "ft.safetensors", root / "data", config


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plain_forwards(workspace, states: list[dict], batch_size: int) -> None:
    """The baseline: load each state into a plain model, one pass over the images."""
    from open_clip.model import CLIP

    model = CLIP(**workspace.arch.model_cfg).to(workspace.device).eval()
    data = workspace.datasets[0]
    head = workspace.heads.get(data.classnames)
    with torch.inference_mode():
        for state in states:
            model.load_state_dict(state)
            for start in range(0, data.num_examples, batch_size):
                x = data.images[start : start + batch_size].to(workspace.device)
                y = data.labels[start : start + batch_size].to(workspace.device)
                f = F.normalize(model.encode_image(x), dim=-1)
                F.cross_entropy(model.logit_scale.exp() * f @ head, y, reduction="sum")


def main() -> None:
    args = parse()
    from clipsharp.config import DataOptions, EvalOptions, PathOptions, RunOptions, SharpnessOptions
    from clipsharp.data import DatasetSpec
    from clipsharp.interpolation import interpolate_weights, run_interpolation
    from clipsharp.layers import layer_groups
    from clipsharp.layerwise import LayerwiseOptions, run_layerwise
    from clipsharp.pipeline import open_workspace
    from clipsharp.sharpness import run_sharpness

    with tempfile.TemporaryDirectory() as tmp:
        zs, ft, data, config = build_inputs(args, Path(tmp))
        alphas = tuple(i / (args.alphas - 1) for i in range(args.alphas))

        def workspace(precision="fp32"):
            return open_workspace(
                {"zero_shot": zs, "fine_tuned": ft},
                [DatasetSpec.parse(str(data), role="ood")],
                data=DataOptions(),
                evaluation=EvalOptions(args.device, args.batch_size, precision),
            )

        ws = workspace()
        options = RunOptions(
            DataOptions(), EvalOptions(args.device, args.batch_size), PathOptions(alphas=alphas)
        )
        zero, fine = ws.checkpoints["zero_shot"].tensors, ws.checkpoints["fine_tuned"].tensors
        plain_forwards(ws, [fine], args.batch_size)  # warm-up
        rows = []

        states = [interpolate_weights(zero, fine, a) for a in alphas]
        base = timed(lambda: plain_forwards(ws, states, args.batch_size))
        ours = timed(lambda: run_interpolation(ws, options))
        rows.append(("interpolate", len(alphas), ours, base))

        changed = [g for g, keys in layer_groups(fine).items() if g.startswith("visual.")]
        layer_states = [states[-1]] + [
            {**fine, **{k: states[i][k] for k in layer_groups(fine)[g]}}
            for g in changed
            for i in range(len(alphas) - 1)
        ]
        base = timed(lambda: plain_forwards(ws, layer_states, args.batch_size))
        for cached in (False, True):
            layer_options = LayerwiseOptions(layers="visual.*", prefix_cache=cached)
            ours = timed(lambda o=layer_options: run_layerwise(ws, options, o))
            name = "layerwise, prefix cache" if cached else "layerwise, full forwards"
            rows.append((name, len(layer_states), ours, base))

        measure = SharpnessOptions(iterations=args.iterations)
        one_alpha = RunOptions(options.data, options.eval, PathOptions(alphas=(1.0,)))
        noisy = [fine] * (args.iterations + 1)
        base = timed(lambda: plain_forwards(ws, noisy, args.batch_size))
        ours = timed(lambda: run_sharpness(ws, one_alpha, measure))
        rows.append(("sharpness (1 point)", len(noisy), ours, base))

        bf16 = workspace("bf16")
        bf16_options = RunOptions(options.data, EvalOptions(args.device, args.batch_size, "bf16"),
                                  options.path)  # fmt: skip
        fp32_time = timed(lambda: run_interpolation(ws, options))
        bf16_time = timed(lambda: run_interpolation(bf16, bf16_options))

    print(f"model: ViT width {args.width}, {args.layers} blocks, {args.image_size} px; "
          f"{args.images} images; device {args.device}")  # fmt: skip
    print(f"{'analysis':<26}{'passes':>8}{'clipsharp s':>14}{'forwards s':>12}{'ratio':>8}")
    for name, passes, ours, base in rows:
        print(f"{name:<26}{passes:>8}{ours:>14.2f}{base:>12.2f}{ours / base:>8.2f}")
    print(f"interpolate fp32 / bf16 working model: {fp32_time:.2f} s / {bf16_time:.2f} s "
          f"= {fp32_time / bf16_time:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

"""How much torchvision's JPEG decoder (``--decode cuda``) moves clipsharp's numbers, against PIL.

The demo's digits (``clipsharp demo --out DIR`` builds them and its models) re-encoded as
JPEGs (quality 90) at 1.75x the model's input size, 4:3 like ImageNet's photos, so that the
model's transform resizes (bicubic, antialiased) about as much as it does from a 500x375
photo to 224 px. ``interpolate`` (11 alphas) of the careful fine-tune runs twice over them:
PIL in the workers, and torchvision's decoder and tensor resize (on ``--device``; on a
machine without a GPU its CPU decoder stands in for nvJPEG). Prints the pixel differences
and, per alpha and dataset, the accuracy and loss differences.

    .venv/bin/python benchmarks/decoders.py --demo clipsharp-demo
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from synthetic import command_line

SCALE = 1.75  # 375 px photos cropped to 224: the ratio ImageNet's evaluation resizes by


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, help="a folder made by clipsharp demo --out")
    parser.add_argument("--device", default="cpu", help="where torchvision decodes")
    return parser.parse_args()


def as_jpegs(source: Path, target: Path, size: int) -> Path:
    """The save_to_disk folder ``source`` with every image a JPEG, SCALE x ``size`` high."""
    import datasets
    from PIL import Image

    rows = datasets.load_from_disk(str(source))
    height = round(size * SCALE)
    width = round(height * 4 / 3)

    def encode(row):
        image = row["image"].convert("RGB").resize((width, height), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return {"image": {"bytes": buffer.getvalue(), "path": None}}

    datasets.disable_progress_bars()
    rows.map(encode, features=rows.features).save_to_disk(str(target))
    return target


def run(demo: Path, folders: dict[str, Path], decode_device) -> dict:
    from clipsharp.analyses.interpolate import run_interpolation
    from clipsharp.core.workspace import open_workspace
    from clipsharp.data.specs import DatasetSpec
    from clipsharp.options import DataOptions, EvalOptions, RunOptions

    options = RunOptions(DataOptions(), EvalOptions(device="cpu", templates="simple"))
    specs = [DatasetSpec.parse(str(p), role=role) for role, p in folders.items()]
    ws = open_workspace(
        {"zero_shot": demo / "zero_shot.safetensors",
         "fine_tuned": demo / "fine_tuned_careful.safetensors"},
        specs, data=options.data, evaluation=options.eval,
    )  # fmt: skip
    ws.datasets = [
        replace(d, images=replace(d.images, decode_device=decode_device)) for d in ws.datasets
    ]
    crops = {
        d.name: torch.cat(list(d.images.batches(range(d.num_examples), 128))).cpu()
        for d in ws.datasets
    }
    return run_interpolation(ws, options).results["path"], crops


def main() -> None:
    args = parse()
    demo = Path(args.demo)
    size = 16  # the demo model's input
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            role: as_jpegs(demo / "data" / name, Path(tmp) / name, size)
            for role, name in (("id", "in_dist"), ("ood", "shifted"))
        }
        by_pil, pil_crops = run(demo, folders, None)
        by_torchvision, tv_crops = run(demo, folders, torch.device(args.device))
    print(f"command: {command_line()}")
    print(f"torchvision decoder on {args.device}; JPEGs {round(size * SCALE * 4 / 3)}x"
          f"{round(size * SCALE)} q90 -> {size} px")  # fmt: skip
    for name, crops in pil_crops.items():
        diff = (tv_crops[name].int() - crops.int()).abs()
        share = (diff > 0).float().mean()
        print(f"{name}: {len(crops)} images; pixel |difference| mean {diff.float().mean():.3f}, "
              f"max {diff.max()}, share of pixels differing {share:.1%}")  # fmt: skip
    print(f"{'alpha':>6} {'dataset':<10}{'acc PIL':>9}{'acc tv':>9}{'d acc':>8}"
          f"{'loss PIL':>10}{'loss tv':>10}{'d loss':>10}")  # fmt: skip
    worst_acc = worst_loss = 0.0
    for a, b in zip(by_pil, by_torchvision, strict=True):
        for name, m in a["metrics"].items():
            n = b["metrics"][name]
            d_acc, d_loss = n["accuracy"] - m["accuracy"], n["loss"] - m["loss"]
            worst_acc, worst_loss = max(worst_acc, abs(d_acc)), max(worst_loss, abs(d_loss))
            accuracy = f"{m['accuracy']:>9.4f}{n['accuracy']:>9.4f}{d_acc:>+8.4f}"
            loss = f"{m['loss']:>10.4f}{n['loss']:>10.4f}{d_loss:>+10.4f}"
            print(f"{a['alpha']:>6.1f} {name:<10}{accuracy}{loss}")
    print(f"largest |d accuracy| {worst_acc:.4f}, largest |d loss| {worst_loss:.4f}")


if __name__ == "__main__":
    main()

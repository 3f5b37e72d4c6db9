"""The baselines clipsharp is timed against: plain open_clip code, no clipsharp import.

- ``minimal``: what a careful script needs for an interpolation sweep and nothing more —
  read both safetensors files, build the model (without random initialisation, as
  clipsharp does), one zero-shot head, one plain DataLoader pass (each batch decoded
  once), and at each alpha the image tower lerped in place and a forward.
- ``naive``: a WiSE-FT-style loop — per alpha: the interpolated state out of place, a
  fresh model (random init) loaded with it, the head encoded again, the data read again.
- ``plain_forwards``: a model holding the fine-tuned weights; the images decoded once,
  then ``passes`` forwards over them (the cost model of a sharpness point).

Run as a script it is the minimal (or naive) sweep in its own process, for whole-process
time and peak memory; it prints the metrics per alpha as JSON on stdout:

    .venv/bin/python benchmarks/baseline.py minimal zs.safetensors ft.safetensors DATA \\
        --alphas 0,0.5,1 --templates simple
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """torch.nn.init's in-place initialisers do nothing: every weight is loaded next."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *a, **k: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def read_pair(zero_shot: str, fine_tuned: str) -> tuple[dict, dict, dict]:
    """(zero-shot state, fine-tuned state, model config from the metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(fine_tuned, framework="pt") as handle:
        config = json.loads(handle.metadata()["clipsharp.model_config"])
    return load_file(zero_shot), load_file(fine_tuned), config


def build(config: dict, state: dict, device, dtype, *, random_init: bool = False):
    from open_clip.model import CLIP

    with contextlib.nullcontext() if random_init else no_init():
        model = CLIP(**json.loads(json.dumps(config)))
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def templates(name: str) -> list:
    import open_clip

    if name == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)


def head(model, config: dict, classnames: Sequence[str], template_set: str, device):
    """(D, C) zero-shot head."""
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])
    with torch.inference_mode():
        return open_clip.build_zero_shot_classifier(
            model, tokenizer, classnames, templates(template_set), 10, device=device
        )


class Images(torch.utils.data.Dataset):
    """(preprocessed float image, label) of a save_to_disk folder."""

    def __init__(self, path: str, image_size: int):
        import datasets
        import open_clip

        self.data = datasets.load_from_disk(path)
        self.transform = open_clip.image_transform(image_size, is_train=False)
        self.classnames = self.data.features["label"].names

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        row = self.data[i]
        return self.transform(row["image"].convert("RGB")), row["label"]


def loader(data: Images, batch_size: int, workers: int = 0):
    return torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers)


def forward_sums(model, images, labels, head_: torch.Tensor, dtype) -> torch.Tensor:
    """(2,) correct, summed cross-entropy (fp64) of one batch."""
    with torch.inference_mode():
        features = F.normalize(model.encode_image(images.to(dtype)), dim=-1)
        logits = (model.logit_scale.exp() * features @ head_).float()  # (B, C)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        return torch.stack([(logits.argmax(-1) == labels).sum().double(), loss.double()])


def minimal(args) -> dict[float, list[float]]:
    """alpha -> [accuracy, mean loss]: one head, each batch decoded once, lerp in place."""
    device, dtype = torch.device(args.device), PRECISIONS[args.precision]
    zero_shot, fine_tuned, config = read_pair(args.zero_shot, args.fine_tuned)
    model = build(config, fine_tuned, device, dtype)
    data = Images(args.data, config["vision_cfg"]["image_size"])
    head_ = head(model, config, data.classnames, args.templates, device)
    live = model.state_dict()
    moving = [k for k in live if k.startswith("visual.") and live[k].is_floating_point()]
    ends = {k: (zero_shot[k].to(device), fine_tuned[k].to(device)) for k in moving}
    sums = torch.zeros(len(args.alphas), 2, dtype=torch.float64)
    for images, labels in loader(data, args.batch_size, args.workers):
        images, labels = images.to(device), labels.to(device)
        for i, alpha in enumerate(args.alphas):
            with torch.no_grad():
                for k in moving:
                    if live[k].dtype == ends[k][0].dtype:
                        torch.lerp(*ends[k], alpha, out=live[k])
                    else:
                        live[k].copy_(torch.lerp(*ends[k], alpha))
            sums[i] += forward_sums(model, images, labels, head_, dtype).cpu()
    count = len(data)
    return {
        a: [s[0].item() / count, s[1].item() / count]
        for a, s in zip(args.alphas, sums, strict=True)
    }


def naive(args) -> dict[float, list[float]]:
    """alpha -> [accuracy, mean loss]: per alpha a new model, a new head, a new data pass."""
    device, dtype = torch.device(args.device), PRECISIONS[args.precision]
    zero_shot, fine_tuned, config = read_pair(args.zero_shot, args.fine_tuned)
    data = Images(args.data, config["vision_cfg"]["image_size"])
    results = {}
    for alpha in args.alphas:
        state = {
            k: torch.lerp(v, fine_tuned[k], alpha) if v.is_floating_point() else v
            for k, v in zero_shot.items()
        }
        model = build(config, state, device, dtype, random_init=True)
        head_ = head(model, config, data.classnames, args.templates, device)
        sums = torch.zeros(2, dtype=torch.float64)
        for images, labels in loader(data, args.batch_size, args.workers):
            sums += forward_sums(model, images.to(device), labels.to(device), head_, dtype).cpu()
        results[alpha] = [sums[0].item() / len(data), sums[1].item() / len(data)]
    return results


def decoded(path: str, image_size: int, batch_size: int) -> tuple[list, list, list[str]]:
    """The batches of a dataset, decoded and preprocessed once: (images, labels, classnames)."""
    data = Images(path, image_size)
    batches = list(loader(data, batch_size))
    return [b[0] for b in batches], [b[1] for b in batches], data.classnames


def plain_forwards(model, batches, labels, head_, passes: int, device, dtype) -> None:
    """``passes`` forwards over the decoded batches with the model as it is."""
    for _ in range(passes):
        for images, y in zip(batches, labels, strict=True):
            forward_sums(model, images.to(device), y.to(device), head_, dtype)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("minimal", "naive"))
    parser.add_argument("zero_shot")
    parser.add_argument("fine_tuned")
    parser.add_argument("data", help="a save_to_disk folder (image, label: ClassLabel)")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--templates", default="simple", choices=("simple", "openai"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS))
    args = parser.parse_args()
    args.alphas = [float(a) for a in args.alphas.split(",")]
    return args


if __name__ == "__main__":
    arguments = parse()
    sweep = minimal if arguments.kind == "minimal" else naive
    print(json.dumps({repr(a): m for a, m in sweep(arguments).items()}))

"""Inputs shared by the benchmarks: random open_clip checkpoints and random image datasets.

Nothing is downloaded. A model is an open_clip config (a small ViT made here, or an
open_clip architecture such as ViT-B-32 with random weights); the fine-tuned checkpoint is
the zero-shot one with its image tower moved by noise, as a fine-tune of the image tower
would. Images are random (smooth noise, so the JPEGs stay small), stored as encoded JPEG
bytes in a ``save_to_disk`` folder: both sides of a benchmark read the same files.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent  # the repository
PYTHON = sys.executable


def small_config(
    width: int = 128, layers: int = 2, image_size: int = 224, patch_size: int = 32
) -> dict:
    """A small ViT image tower and a one-block text tower (context 16)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "patch_size": patch_size,
            "head_width": 64,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
        },
    }


def model_config(arch: str | None, **small) -> dict:
    """open_clip's config of ``arch`` (random weights), or ``small_config(**small)``."""
    if arch is None:
        return small_config(**small)
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise SystemExit(f"--arch {arch}: open_clip has no such config")
    return config


def write_pair(config: dict, root: Path, device: str = "cpu") -> tuple[Path, Path]:
    """zs.safetensors (random CLIP) and ft.safetensors (image tower moved by 5 % noise)."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(0)
    with torch.device(device):
        model = CLIP(**json.loads(json.dumps(config)))
    zero_shot = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    fine_tuned = {
        k: (v + 0.05 * v.float().std() * torch.randn_like(v)).contiguous()
        if k.startswith("visual.") and v.is_floating_point() and v.numel() > 1
        else v
        for k, v in zero_shot.items()
    }
    meta = {"clipsharp.model_config": json.dumps(config)}
    paths = root / "zs.safetensors", root / "ft.safetensors"
    for path, state in zip(paths, (zero_shot, fine_tuned), strict=True):
        save_file({k: v.cpu() for k, v in state.items()}, str(path), metadata=meta)
    return paths


def write_images(
    path: Path, count: int, size: int = 224, classes: int = 10, height: int | None = None
) -> Path:
    """A save_to_disk folder of ``count`` random JPEGs (quality 90), ``size`` px wide and
    ``height`` (default ``size``) high, labels cycling 0..classes-1."""
    from PIL import Image

    rng = np.random.default_rng(0)
    height = height or size
    encoded = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (height // 8, size // 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, height), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return save_jpegs(path, encoded, classes)


def save_jpegs(path: Path, encoded: list[bytes], classes: int) -> Path:
    """A save_to_disk folder of these encoded images, labels cycling 0..classes-1."""
    import datasets

    names = [f"class {i}" for i in range(classes)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    datasets.disable_progress_bars()
    images = [{"bytes": data, "path": None} for data in encoded]
    labels = [i % classes for i in range(len(encoded))]
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    data.save_to_disk(str(path))
    return path


@dataclass(frozen=True)
class Child:
    """One finished child process: wall seconds, peak RSS in MB, its stdout."""

    seconds: float
    peak_mb: float  # VmHWM from wait4: anonymous memory plus mapped file pages touched
    anon_mb: float  # the largest RssAnon seen, sampled every 50 ms (heap, tensors)
    file_mb: float  # the largest RssFile seen (libraries, memory-mapped arrow files)
    stdout: str


class _Sampler(threading.Thread):
    """Largest RssAnon and RssFile of a process, from /proc, until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop, self.peak = pid, threading.Event(), {"RssAnon": 0, "RssFile": 0}

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.stop.wait(0.05):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                return
            for line in lines:
                name, _, value = line.partition(":")
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], int(value.split()[0]))


def run_child(command: list[str], env: dict | None = None) -> Child:
    """Run ``command``; its own peak RSS (and its waited-for children's) from wait4."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True
    )
    sampler = _Sampler(process.pid)
    sampler.start()
    # read before waiting: a full pipe would block the child
    stdout, stderr = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    anon, mapped = sampler.peak["RssAnon"] / 1024, sampler.peak["RssFile"] / 1024
    return Child(seconds, usage.ru_maxrss / 1024, anon, mapped, stdout)  # KiB on Linux


def clipsharp_command() -> list[str]:
    """The CLI, as installed in this interpreter's environment."""
    return [PYTHON, "-m", "clipsharp"]


def quiet_env(threads: int | None = None) -> dict:
    """Offline, no colour; ``threads`` pins torch's intra-op threads in the child."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", NO_COLOR="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def max_rss_mb() -> float:
    """Peak RSS of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def command_line() -> str:
    """The command that started this benchmark, to print with its numbers."""
    return " ".join([".venv/bin/python", *sys.argv])

"""Every fenced `clipsharp ...` example in README.md and docs/ runs, on tiny fixtures.

Each document's examples run in order, in a folder of their own laid out with the
names the docs use (zs.safetensors, data/shifted, path.json, ...), made from the
tiny fixtures; the `toml` blocks of a document become its clipsharp.toml. A few
substitutions fit the examples to the tiny model (listed in SUBSTITUTIONS).
Synopsis lines (with placeholders like REPORT or [options]) and lines using shell
variables (the body of a loop) are not commands.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_CONFIG, coloured_images, invoke
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
SUBSTITUTIONS = {  # the docs' names for a large model -> the tiny one
    "ViT-B-32": "config/tiny.json",
    "visual.block.10": "visual.block.0",
    "visual.block.11": "visual.block.1",
}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{3,}\b|\[|\(--")
GATES = ("check", "--fail-on")  # may exit 1 on the tiny random pair: a verdict, not an error


def examples(doc: str) -> tuple[list[str], list[str]]:
    """(clipsharp command lines, toml blocks) of a document, in order."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    commands, tomls = [], []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang == "toml":
            tomls.append(block)
            continue
        lines = _yaml_runs(block) if lang == "yaml" else block.replace("\\\n", " ").splitlines()
        for line in lines:
            line = re.sub(r"\s+", " ", line.strip()).removeprefix(".venv/bin/")
            shell_variable = re.search(r"\$\{?\w", line.split(">>")[0])  # a loop body
            if (
                line.startswith("clipsharp ")
                and not PLACEHOLDER.search(line)
                and not shell_variable
            ):
                commands.append(line)
    return commands, tomls


def _yaml_runs(block: str) -> list[str]:
    steps = yaml.safe_load(block)["jobs"]
    runs = [s.get("run", "") for job in steps.values() for s in job["steps"]]
    return [line for run in runs for line in run.splitlines()]


def test_every_document_has_examples():
    found = {doc: examples(doc)[0] for doc in DOCS}
    commands = ("interpolate", "layerwise", "sharpness", "stragglers", "prune", "plot", "study",
                "check", "convert", "inspect", "demo", "merge")  # fmt: skip
    pages = [f"docs/commands/{c}.md" for c in commands]
    assert all(found[doc] for doc in ("README.md", "docs/ci.md", *pages)), found


@pytest.fixture(scope="module")
def layout(pair, tmp_path_factory) -> Path:
    """The files the docs name, made from the tiny fixtures and real reports."""
    import datasets

    root = tmp_path_factory.mktemp("docs-layout")
    for name in ("zs.safetensors", "zeroshot.safetensors"):
        shutil.copy(pair.zero_shot, root / name)
    shutil.copy(pair.fine_tuned, root / "ft.safetensors")
    (root / "checkpoints").mkdir()
    torch.save(load_file(str(pair.fine_tuned)), root / "checkpoints" / "finetuned.pt")
    shutil.copy(root / "checkpoints" / "finetuned.pt", root / "finetuned.pt")
    (root / "config").mkdir()
    (root / "config" / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["red", "green", "blue", "yellow"]),
        }
    )
    for seed, name in enumerate(("in_dist", "shifted", "sketch")):
        images, labels = coloured_images(16, seed=10 + seed)
        split = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        datasets.DatasetDict({"test": split}).save_to_disk(str(root / "data" / name))
    _imagenet_layout(root, load_file(str(pair.zero_shot)))
    pair_args = [
        "zs.safetensors",
        "ft.safetensors",
        "--id",
        "data/in_dist",
        "--ood",
        "data/shifted",
    ]
    fast = ["--device", "cpu", "--iterations", "2"]
    reports = {
        "path.json": ["interpolate", *pair_args, "--alphas", "0,0.5,1"],
        "layers.json": ["layerwise", *pair_args, "--alphas", "0,0.5,1"],
        "sharp.json": ["sharpness", *pair_args, "--alphas", "0,1", *fast],
        "stragglers.json": ["stragglers", *pair_args, "--top-k", "1", *fast],
        "pruned.json": [
            "prune",
            "ft.safetensors",
            "--layers",
            "visual.block.0",
            "--zero-shot",
            "zs.safetensors",
            "--ood",
            "data/shifted",
            "-o",
            "pruned.safetensors",
            "--report",
            "pruned.json",
        ],  # fmt: skip
    }
    for name, args in reports.items():
        with _inside(root):
            extra = [] if name == "pruned.json" else ["-o", name]
            result = invoke(*args, *extra)
        assert result.exit_code == 0, (name, result.output)
    for copy in ("before.json", "after.json", "last-release.json"):
        shutil.copy(root / "path.json", root / copy)
    shutil.copy(root / "sharp.json", root / "sharpness.json")
    (root / "reports").mkdir()
    shutil.copy(root / "path.json", root / "reports" / "last-release.json")
    from test_webdataset import write_webdataset

    for seed, name in enumerate(("wds_imagenet-a", "wds_imagenet-r")):  # clip_benchmark's
        write_webdataset(root / name, 8, seed=20 + seed)
    with _inside(root):  # the demo's folder, as `make demo` leaves it (toy recipe)
        result = invoke("demo", "--quick", "--out", "clipsharp-demo", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return root


def _imagenet_layout(root: Path, state: dict) -> None:
    """docs/imagenet.md's sets as users hold them (wnid folders, ImageNetV2's integer
    folders; four real classes, tiny images) and a pair with a 1000-row stored head."""
    wnids = ["n01498041", "n01531178", "n01534433", "n01558993"]  # ImageNet-A's first four
    layouts = {
        "imagenet/val": wnids, "imagenet-a": wnids, "imagenet-r": wnids[1:] + ["n01443537"],
        "imagenet-sketch/sketch": wnids, "imagenetv2-matched-frequency-format-val":
        ["6", "11", "13", "15"],
    }  # fmt: skip
    for seed, (folder, names) in enumerate(layouts.items()):
        images, labels = coloured_images(8, seed=20 + seed)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            (root / "data" / folder / names[label]).mkdir(parents=True, exist_ok=True)
            image.save(root / "data" / folder / names[label] / f"{i}.png")
    gen = torch.Generator().manual_seed(0)
    head = {"head.weight": torch.randn(1000, TINY_CONFIG["embed_dim"], generator=gen),
            "head.bias": torch.zeros(1000)}  # fmt: skip
    for name in ("wiseft-zs", "wiseft-ft"):
        tensors = {**state, **head}
        metadata = {"clipsharp.model_config": json.dumps(TINY_CONFIG)}
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(root / f"{name}.safetensors"),
            metadata=metadata,
        )
        head = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in head.items()}


class _inside:
    def __init__(self, folder: Path):
        self.folder, self.previous = folder, None

    def __enter__(self):
        import os

        self.previous = Path.cwd()
        os.chdir(self.folder)

    def __exit__(self, *exc):
        import os

        os.chdir(self.previous)


def _argv(command: str, folder: Path) -> tuple[list[str], bool]:
    """shlex words without the shell's pipes and redirections; globs expanded in ``folder``."""
    for name, tiny in SUBSTITUTIONS.items():
        command = command.replace(name, tiny)
    piped_to_jq = "| jq" in command
    command = re.split(r"\s(\||>>|>)\s", command)[0]
    words = []
    for word in shlex.split(command, comments=True)[1:]:
        matches = sorted(glob.glob(str(folder / word))) if word.endswith("*.json") else []
        words += [str(Path(m).relative_to(folder)) for m in matches] or [word]
    return words, piped_to_jq


@pytest.mark.slow  # every example of every page, on a layout that runs the demo
@pytest.mark.parametrize("doc", DOCS)
def test_examples_run(doc, layout, tmp_path):
    commands, tomls = examples(doc)
    folder = tmp_path / "work"
    shutil.copytree(layout, folder)
    if tomls:
        (folder / "clipsharp.toml").write_text("\n".join(tomls))
    for command in commands:
        words, piped_to_jq = _argv(command, folder)
        if words[0] == "demo":
            words.append("--quick")  # the toy recipe: seconds, not a minute
        with _inside(folder):
            result = invoke(*words)
        allowed = (0, 1) if any(g in words for g in GATES) else (0,)
        assert result.exit_code in allowed, f"{doc}: {command}\n{result.output}"
        if piped_to_jq:
            json.loads(result.stdout)


@pytest.mark.slow  # the layout runs the demo and five commands
@pytest.mark.parametrize("doc", ["README.md", "docs/ci.md"])
def test_library_examples_run(doc, layout, tmp_path):
    """The self-contained Python examples (those that start by importing clipsharp)."""
    folder = tmp_path / "work"
    shutil.copytree(layout, folder)
    text = (ROOT / doc).read_text(encoding="utf-8")
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("from clipsharp")
    ]
    assert blocks
    for block in blocks:
        with _inside(folder):
            exec(compile(block, doc, "exec"), {"__name__": "__doc_example__"})


@pytest.mark.slow  # the layout runs the demo and five commands
def test_reports_md_names_every_field_the_reports_hold(layout):
    """docs/reports.md documents every config, summary and metric field (or says where)."""
    reference = (ROOT / "docs" / "reports.md").read_text(encoding="utf-8")
    reference += (ROOT / "docs" / "sharpness.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"[a-z_]+", reference))  # in prose, tables or examples
    fields: set[str] = set()
    for name in ("path.json", "layers.json", "sharp.json", "stragglers.json", "pruned.json"):
        doc = json.loads((layout / name).read_text())
        fields |= set(doc) | set(doc["config"]) | set(doc["inputs"]["datasets"][0])
        datasets = {d["name"] for d in doc["inputs"]["datasets"]}
        for value in doc["summary"].values():
            entries = value if isinstance(value, list) else [value]
            fields |= {k for e in entries if isinstance(e, dict) for k in e if k not in datasets}
    undocumented = sorted(f for f in fields if f not in documented)
    assert not undocumented, undocumented

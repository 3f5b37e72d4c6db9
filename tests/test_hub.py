"""Hub checkpoints (hf-hub:ORG/REPO, pretrained:MODEL/TAG), with the hub replaced by a folder."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
from conftest import TINY_CONFIG, invoke, save_checkpoint
from safetensors.torch import load_file

from clipsharp.core.checkpoint import resolve_source


@pytest.fixture
def hub(pair, tmp_path, monkeypatch):
    """Two open_clip repositories laid out as the hub cache holds them."""
    repos = {}
    for repo, source in (("org/zero-shot", pair.zero_shot), ("org/fine-tuned", pair.fine_tuned)):
        snapshot = tmp_path / repo / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        save_checkpoint(snapshot / "open_clip_model.safetensors", load_file(str(source)), None)
        config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
        (snapshot / "open_clip_config.json").write_text(json.dumps(config))
        repos[repo] = snapshot
    calls = []

    def download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        if repo_id not in repos:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        return str(repos[repo_id] / filename)

    # no network here, and writing a hub cache could shadow the user's: clipsharp's one door
    # to the hub, huggingface_hub's public hf_hub_download, is answered from the folder
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return repos, calls


def test_hub_sources_resolve_to_the_cached_weights(hub):
    repos, calls = hub
    path = resolve_source("hf-hub:org/fine-tuned@v1")
    assert path == repos["org/fine-tuned"] / "open_clip_model.safetensors"
    assert ("org/fine-tuned", "open_clip_config.json", "v1") in calls


def test_interpolate_between_hub_checkpoints(hub, pair):
    result = invoke("interpolate", "hf-hub:org/zero-shot", "hf-hub:org/fine-tuned",
                    "--ood", pair.shifted, "--alphas", "0,1", "--device", "cpu",
                    "-o", "-")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["inputs"]["architecture"]["source"].endswith("open_clip_config.json")


def test_missing_hub_checkpoint_is_a_clear_error(hub, pair):
    result = invoke("inspect", "hf-hub:org/absent")
    assert result.exit_code == 2
    assert (
        "hf-hub:org/absent: cannot get an open_clip model (open_clip_config.json" in result.stderr
    )
    assert "nor a transformers CLIPModel (config.json" in result.stderr


def test_pretrained_tag_maps_to_its_hub_repository(hub):
    repos, calls = hub
    with pytest.raises(Exception, match="LocalEntryNotFoundError"):
        resolve_source("pretrained:ViT-B-32/laion2b_s34b_b79k")
    assert calls[-1][0] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    result = invoke("inspect", "pretrained:ViT-B-32/no-such-tag")
    assert result.exit_code == 2 and "laion2b_s34b_b79k" in result.stderr  # lists the tags


def test_offline_hub_lookup_fails_at_once():
    import time

    started = time.monotonic()
    result = invoke("inspect", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert result.exit_code == 2 and "go online once to cache them" in result.stderr
    assert time.monotonic() - started < 10  # HF_HUB_OFFLINE=1: no retries against the network


@pytest.fixture
def transformers_hub(hf_pair, tmp_path, monkeypatch):
    """A transformers CLIPModel repository (one file) and a sharded one, as the hub cache
    holds them; the hub has no open_clip files for either."""
    import shutil

    repos = {"org/hf-zs": hf_pair.zero_shot, "org/hf-sharded": hf_pair.sharded}
    calls = []

    def download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename))
        source = repos[repo_id] / filename if repo_id in repos else None
        if source is None or not source.is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"{repo_id} has no {filename}")
        snapshot = tmp_path / repo_id / "snapshots" / "abc123"
        snapshot.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, snapshot / filename)
        return str(snapshot / filename)

    # no network here, and writing a hub cache could shadow the user's: clipsharp's one door
    # to the hub, huggingface_hub's public hf_hub_download, is answered from the folder
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_transformers_repositories_on_the_hub_read_as_their_folders(transformers_hub, hf_pair):
    from clipsharp.core.checkpoint import load_checkpoint

    folder = load_checkpoint(hf_pair.zero_shot)
    for repo in ("org/hf-zs", "org/hf-sharded"):
        loaded = load_checkpoint(f"hf-hub:{repo}")
        assert loaded.tensors.keys() == folder.tensors.keys()
        assert all(loaded.tensors[k].equal(t) for k, t in folder.tensors.items())
    fetched = {name for repo, name in transformers_hub if repo == "org/hf-sharded"}
    assert {"config.json", "model.safetensors.index.json"} <= fetched
    assert any(name.startswith("model-") for name in fetched)  # every shard the index lists

"""Sharpness: exact restore, determinism, agreement with an independent Monte-Carlo loop,
worst >= average, the constraint on delta, and the command line."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSNAMES, TINY_CONFIG, invoke, run_options, workspace
from safetensors.torch import load_file

from clipsharp.analyses.sharpness import at_chance, measure_sharpness, run_sharpness
from clipsharp.core.perturb import noise_generator, perturbed_keys
from clipsharp.errors import ConfigError
from clipsharp.options import SharpnessOptions


def one_model(pair, batch_size=128):
    """A workspace of the fine-tuned model alone, on the shifted set."""
    return workspace(
        pair, run_options(batch_size=batch_size), checkpoints={"model": pair.fine_tuned}
    )


def measure(ws, rho, batch_size=128, seed=0, **options):
    options = SharpnessOptions(**{"iterations": 4, **options})
    keys = perturbed_keys(ws.classifier, options)
    return measure_sharpness(
        ws.classifier, ws.heads, ws.datasets, keys, options,
        rho=rho, batch_size=batch_size, seed=seed,
    )["shifted"]  # fmt: skip


def snapshot(ws):
    return {key: tensor.clone() for key, tensor in ws.classifier.tensors.items()}


def assert_bit_identical(ws, before):
    for key, tensor in ws.classifier.tensors.items():
        assert torch.equal(tensor, before[key]), key


@pytest.mark.parametrize("kind", ["average", "worst"])
def test_rho_zero_is_zero_and_weights_come_back_bit_identical(pair, kind):
    ws = one_model(pair)
    before = snapshot(ws)
    zero = measure(ws, 0.0, kind=kind, iterations=2)
    assert zero.sharpness == 0.0 and zero.error_sharpness == 0.0
    assert zero.perturbed_loss == zero.clean_loss
    measure(ws, 0.5, kind=kind, iterations=2)
    assert_bit_identical(ws, before)


def test_same_seed_same_numbers_other_seed_other_draws(pair):
    ws = one_model(pair)
    first, again, other = measure(ws, 0.5), measure(ws, 0.5), measure(ws, 0.5, seed=1)
    assert first == again
    assert other.sharpness != first.sharpness and other.clean_loss == first.clean_loss
    a = torch.randn(1000, generator=noise_generator(0, 3))
    assert torch.equal(a, torch.randn(1000, generator=noise_generator(0, 3)))
    assert not torch.equal(a, torch.randn(1000, generator=noise_generator(1, 3)))
    assert not torch.equal(a, torch.randn(1000, generator=noise_generator(0, 4)))


def test_common_random_numbers_make_batching_irrelevant(pair):
    """Every batch sees the same draw, so the batch size changes nothing but rounding."""
    small, large = measure(one_model(pair, batch_size=3), 0.5), measure(one_model(pair), 0.5)
    assert small.sharpness == pytest.approx(large.sharpness, abs=1e-5)
    assert small.perturbed_error == large.perturbed_error


class PlainModel:
    """An independent evaluation: open_clip model, zero-shot head, preprocessed images."""

    def __init__(self, checkpoint, dataset_path):
        import datasets
        import open_clip
        from open_clip.model import CLIP

        self.state = load_file(str(checkpoint))
        self.model = CLIP(**TINY_CONFIG).eval()
        self.model.load_state_dict(self.state)
        context = TINY_CONFIG["text_cfg"]["context_length"]
        tokenizer = open_clip.SimpleTokenizer(context_length=context)
        transform = open_clip.image_transform(32, is_train=False)
        rows = datasets.load_from_disk(str(dataset_path))
        self.images = torch.stack([transform(row["image"].convert("RGB")) for row in rows])
        self.labels = torch.tensor(rows["label"])
        with torch.no_grad():
            self.head = open_clip.build_zero_shot_classifier(
                self.model, tokenizer, CLASSNAMES, open_clip.OPENAI_IMAGENET_TEMPLATES
            )

    @torch.no_grad()
    def loss(self, noise: dict | None = None, rho: float = 0.0) -> float:
        """Mean cross-entropy with visual.* weights w + rho * |w| * noise[key]."""
        state = dict(self.state)
        for key, z in (noise or {}).items():
            state[key] = self.state[key] + rho * self.state[key].abs() * z
        self.model.load_state_dict(state)
        features = F.normalize(self.model.encode_image(self.images), dim=-1)
        logits = self.model.logit_scale.exp() * features @ self.head
        return F.cross_entropy(logits, self.labels).item()

    def noise(self, generator) -> dict:
        """Unit normals for the image tower's tensors, drawn in the order of their names."""
        keys = sorted(k for k in self.state if k.startswith("visual."))
        return {k: torch.randn(self.state[k].shape, generator=generator) for k in keys}


@pytest.fixture(scope="module")
def plain(pair):
    return PlainModel(pair.fine_tuned, pair.shifted)


def test_the_documented_draws_reproduce_every_number(pair, plain):
    """Draw k = unit normals from noise_generator(seed, k), for the keys sorted by name."""
    rho, draws = 0.5, 4
    measured = measure(one_model(pair), rho, iterations=draws)
    clean = plain.loss()
    losses = [plain.loss(plain.noise(noise_generator(0, k)), rho) for k in range(draws)]
    assert measured.clean_loss == pytest.approx(clean, rel=1e-5)
    assert measured.perturbed_loss == pytest.approx(statistics.fmean(losses), rel=1e-5)
    expected_stderr = statistics.stdev(losses) / math.sqrt(draws)
    assert measured.stderr == pytest.approx(expected_stderr, rel=1e-3, abs=1e-7)


def test_average_agrees_with_an_independent_monte_carlo_within_3_stderr(pair, plain):
    rho, draws = 0.5, 30
    measured = measure(one_model(pair), rho, iterations=draws)
    generator = torch.Generator().manual_seed(20240601)
    clean = plain.loss()
    rises = [plain.loss(plain.noise(generator), rho) - clean for _ in range(draws)]
    estimate, stderr = statistics.fmean(rises), statistics.stdev(rises) / math.sqrt(draws)
    assert abs(measured.sharpness - estimate) <= 3 * math.hypot(measured.stderr, stderr)
    assert measured.sharpness > 0 and estimate > 0  # noise raises the loss on average


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_worst_case_beats_average_and_respects_the_constraint(pair, norm):
    ws = one_model(pair)
    before = snapshot(ws)
    rho = 0.2
    average = measure(ws, rho, iterations=6)
    worst = measure(ws, rho, kind="worst", norm=norm, iterations=6)
    assert worst.sharpness >= average.sharpness and worst.sharpness > 0
    assert worst.clean_loss == average.clean_loss
    assert 0 < worst.delta_norm <= rho * (1 + 1e-6)
    assert worst.stderr is None
    assert_bit_identical(ws, before)


def test_weights_restored_when_a_run_is_interrupted_mid_path(pair):
    """Ctrl-C in the middle of a sweep (the model at some alpha, perturbed on and off):
    the working model holds the fine-tuned weights again, bit for bit."""
    run = run_options()
    ws = workspace(pair, run)
    before, calls = snapshot(ws), [0]

    def interrupt(event):
        calls[0] += 1
        if calls[0] == 4:  # after the second draw at alpha 0: the model is not at rest
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sharpness(ws, run, SharpnessOptions(iterations=3), progress=interrupt)
    assert calls[0] == 4
    assert_bit_identical(ws, before)


def test_perturbed_keys_follow_the_options(pair):
    ws = one_model(pair)
    image = perturbed_keys(ws.classifier, SharpnessOptions())
    assert image and all(k.startswith("visual.") for k in image)
    assert "logit_scale" in perturbed_keys(ws.classifier, SharpnessOptions(include_head=True))
    with_text = perturbed_keys(ws.classifier, SharpnessOptions(include_text=True))
    assert "token_embedding.weight" in with_text and "logit_scale" not in with_text
    excluded = perturbed_keys(ws.classifier, SharpnessOptions(exclude=r"\.proj$|conv1"))
    assert "visual.proj" not in excluded and len(excluded) == len(image) - 2
    block = perturbed_keys(ws.classifier, SharpnessOptions(layers="visual.block.1"))
    assert block and all(k.startswith("visual.transformer.resblocks.1.") for k in block)
    globbed = perturbed_keys(ws.classifier, SharpnessOptions(layers="visual.block.*,visual.head"))
    assert "visual.proj" in globbed and "visual.conv1.weight" not in globbed
    with pytest.raises(ConfigError, match="valid names: visual.embed, visual.block.0"):
        perturbed_keys(ws.classifier, SharpnessOptions(layers="text.block.0"))


def test_text_perturbation_reencodes_the_prompts_at_every_draw(pair):
    ws = one_model(pair)
    before = snapshot(ws)
    clean_head = ws.heads.get(CLASSNAMES).clone()
    start = ws.heads.encodings
    measure(ws, 0.1, include_text=True, iterations=3)
    assert ws.heads.encodings - start >= 3
    assert_bit_identical(ws, before)
    assert torch.equal(ws.heads.get(CLASSNAMES), clean_head)


def test_path_points_and_the_fine_tuned_end_equal_the_one_model_measure(pair):
    run = run_options()
    options = SharpnessOptions(rhos=(0.1, 0.5), iterations=3)
    ws = workspace(pair, run)
    doc = run_sharpness(ws, run, options).to_dict()
    points = doc["results"]["points"]
    assert [(p["alpha"], p["rho"]) for p in points] == [
        (a, r) for a in (0.0, 0.5, 1.0) for r in (0.1, 0.5)
    ]
    one = run_sharpness(one_model(pair), run, options).to_dict()["results"]["points"]
    assert [p["alpha"] for p in one] == [None, None]
    for end, single in zip(points[-2:], one, strict=True):
        assert end["metrics"]["shifted"]["sharpness"] == pytest.approx(
            single["metrics"]["shifted"]["sharpness"], abs=1e-6
        )
    summary = doc["summary"]["shifted"]
    assert [row["rho"] for row in summary] == [0.1, 0.5]
    at = {p["alpha"]: p["metrics"]["shifted"]["sharpness"] for p in points if p["rho"] == 0.5}
    assert summary[1]["zero_shot"] == at[0.0] and summary[1]["fine_tuned"] == at[1.0]
    assert summary[1]["max_sharpness"] == max(at.values())
    assert at[summary[1]["max_alpha"]] == max(at.values())
    ft = load_file(str(pair.fine_tuned))
    assert all(torch.equal(ws.classifier.tensors[k], v) for k, v in ft.items())


def test_at_chance():
    assert at_chance(loss=1.4, accuracy=0.9, num_classes=4, num_examples=100)  # loss >= log 4
    assert at_chance(loss=0.5, accuracy=0.27, num_classes=4, num_examples=100)  # 1/4 +- 0.043
    assert not at_chance(loss=0.5, accuracy=0.32, num_classes=4, num_examples=100)


def test_cli_usage_line_with_config_file_and_rho_list(pair, tmp_path, monkeypatch):
    (tmp_path / "clipsharp.toml").write_text(
        f'id = "{pair.in_dist}"\nood = ["{pair.shifted}"]\ndevice = "cpu"\n'
        '[sharpness]\nalphas = "0,0.5,1"\niterations = 2\nrho = 1.0\n'
    )
    monkeypatch.chdir(tmp_path)
    result = invoke("sharpness", pair.zero_shot, pair.fine_tuned)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["command"] == "sharpness" and doc["config"]["limit"] == 1024
    assert [(p["alpha"], p["rho"]) for p in doc["results"]["points"]] == [
        (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)
    ]  # fmt: skip
    assert set(doc["summary"]) == {"in_dist", "shifted"}
    assert "warning" in result.stderr and "at chance" in result.stderr  # the tiny pair is
    result = invoke("sharpness", pair.zero_shot, pair.fine_tuned, "--rho", "0.05,0.1")
    assert result.exit_code == 0, result.output
    rhos = sorted({p["rho"] for p in json.loads(result.stdout)["results"]["points"]})
    assert rhos == [0.05, 0.1]


def test_cli_one_checkpoint_and_worst_case(pair, tmp_path):
    report = tmp_path / "sharp.json"
    args = ["sharpness", pair.fine_tuned, "--ood", pair.shifted, "--device", "cpu"]
    result = invoke(*args, "--kind", "worst", "--rho", "0.1", "--iterations", "3", "-o", report)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert list(doc["inputs"]["checkpoints"]) == ["model"]
    [point] = doc["results"]["points"]
    assert point["alpha"] is None and point["rho"] == 0.1
    assert 0 < point["metrics"]["shifted"]["delta_norm"] <= 0.1 * (1 + 1e-6)
    assert doc["config"]["kind"] == "worst" and doc["config"]["norm"] == "l2"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "visual.block.9"], "valid names: visual.embed, visual.block.0"),
        (["--kind", "best"], "--kind 'best' is unknown"),
        (["--rho=-1"], "--rho needs finite values >= 0"),
    ],
)
def test_cli_bad_options_exit_2(pair, extra, message):
    args = ["sharpness", pair.zero_shot, pair.fine_tuned, "--ood", pair.shifted]
    result = invoke(*args, "--device", "cpu", "--iterations", "1", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["average", "worst"])
def test_the_head_is_encoded_once_per_run_when_the_text_tower_stays(pair, kind):
    """Heads are cached by text identity for the run: not per block, draw or ascent step."""
    run = run_options(batch_size=4, block_images=8)
    ws = workspace(pair, run)
    start = ws.heads.encodings
    run_sharpness(ws, run, SharpnessOptions(kind=kind, rhos=(0.2,), iterations=3))
    assert ws.heads.encodings - start == 1

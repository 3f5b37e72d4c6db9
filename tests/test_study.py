"""study: measures joined by checkpoint, statistics against references written out here, a
study of checkpoints against the single commands, resumed after a kill."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    average_ranks,
    fine_tune_like,
    invoke,
    reference_spearman,
    save_checkpoint,
    succeeds,
)
from safetensors.torch import load_file

from clipsharp.options import StatisticsOptions
from clipsharp.reports.statistics import (
    bootstrap_interval,
    correlate,
    kendall_tau_b,
    permutation_p,
    spearman,
)


@pytest.fixture(scope="module")
def reports(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    zs = load_file(str(pair.zero_shot))
    paths = []
    for i, scale in enumerate((0.05, 0.3, 0.8, 1.5)):
        ft = save_checkpoint(
            root / f"ft{i}.safetensors", fine_tune_like(zs, seed=10 + i, scale=scale)
        )
        common = [
            pair.zero_shot,
            ft,
            "--id",
            pair.in_dist,
            "--ood",
            pair.shifted,
            "--device",
            "cpu",
        ]
        paths.append(root / f"interpolate-{i}.json")
        succeeds("interpolate", *common, "--alphas", "0:1:0.25", "-o", paths[-1])
        paths.append(root / f"sharpness-{i}.json")
        succeeds("sharpness", *common, "--alphas", "0,1", "--iterations", "3", "--rho", "0.3",
                 "-o", paths[-1])  # fmt: skip
    return paths


def test_correlations_recomputed_from_the_reports(reports):
    result = succeeds("study", *reports, "-o", "-")
    doc = json.loads(result.stdout)
    assert doc["inputs"]["num_checkpoints"] == 4
    rows = doc["results"]["checkpoints"]
    gains, sharp = [], []
    for i in range(4):
        interpolate = json.loads(reports[2 * i].read_text())
        sharpness = json.loads(reports[2 * i + 1].read_text())
        row = next(
            r
            for r in rows
            if r["sha256"] == interpolate["inputs"]["checkpoints"]["fine_tuned"]["sha256"]
        )
        assert row["measures"]["gain[shifted]"] == interpolate["summary"]["shifted"]["gain"]
        assert (
            row["measures"]["sharpness@1[shifted]"]
            == sharpness["summary"]["shifted"][0]["fine_tuned"]
        )
        gains.append(row["measures"]["gain[shifted]"])
        sharp.append(row["measures"]["sharpness@1[shifted]"])
    rx, ry = average_ranks(sharp), average_ranks(gains)
    found = doc["summary"]["correlations"]["shifted"]["sharpness@1[shifted]"]
    if np.std(rx) and np.std(ry):
        assert found["spearman"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    else:
        assert found["spearman"] is None  # a constant ranks nothing
    assert found["checkpoints"] == 4
    assert "max_sharpness[in_dist]" in doc["summary"]["correlations"]["shifted"]
    assert "sharpness@1[shifted]" in result.stderr  # the table


def test_library_study_of_reports_is_the_command_s_and_writes_its_report(reports, tmp_path):
    from clipsharp.analyses.study import study
    from clipsharp.errors import ConfigError
    from clipsharp.options import StudyOptions

    output = tmp_path / "study.json"
    report = study(StudyOptions(paths=tuple(reports)), output=output)
    written = json.loads(output.read_text())
    assert written == json.loads(report.to_json())
    command = json.loads(succeeds("study", *reports, "-o", "-").stdout)
    for key in ("inputs", "config", "results", "summary"):  # not when, nor how long
        assert written[key] == command[key], key
    before = reports[0].read_bytes()
    with pytest.raises(ConfigError, match="is also an input, the report"):
        study(StudyOptions(paths=tuple(reports)), output=reports[0])
    assert reports[0].read_bytes() == before


def test_the_study_s_seed_is_the_seed_of_its_statistics(reports):
    """One --seed: the data's (DataOptions.seed) is the one the statistics record and use."""
    seeded = json.loads(succeeds("study", *reports, "--seed", "5", "-o", "-").stdout)
    assert seeded["config"]["statistics"] == {
        "bootstrap": 2000, "confidence": 0.95, "permutations": 10000, "seed": 5,
    }  # fmt: skip
    default = json.loads(succeeds("study", *reports, "-o", "-").stdout)
    assert default["config"]["statistics"]["seed"] == 0


def test_refuses_mixed_zero_shot_models_and_missing_gain(pair, reports, tmp_path):
    other = tmp_path / "other.json"
    succeeds("interpolate", pair.fine_tuned, pair.zero_shot, "--ood", pair.shifted,
             "--alphas", "0,1", "--device", "cpu", "-o", other)  # fmt: skip
    mixed = invoke("study", reports[0], other)
    assert mixed.exit_code == 2 and "different zero-shot checkpoints" in mixed.stderr
    lonely = invoke("study", reports[1])
    assert lonely.exit_code == 2 and "has no interpolate report" in lonely.stderr


# --- statistics against references written out here ------------------------------------

X = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0, 4.0, 7.0, 0.5]  # ties in x
Y = [2.0, 1.0, 3.0, 3.0, 6.0, 5.0, 8.0, 7.0, 3.0]  # ties in y


def reference_kendall_b(x, y):
    """tau-b by the pair definition: (C - D) / sqrt((C + D + Tx)(C + D + Ty))."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        if x[i] == x[j] and y[i] == y[j]:
            continue
        if x[i] == x[j]:
            tx += 1
        elif y[i] == y[j]:
            ty += 1
        elif (x[i] - x[j]) * (y[i] - y[j]) > 0:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def linear_quantile(values, q):
    s = sorted(values)
    h = (len(s) - 1) * q
    low = math.floor(h)
    return s[low] + (h - low) * (s[min(low + 1, len(s) - 1)] - s[low])


def test_rank_correlations_equal_the_pair_and_rank_definitions_with_ties():
    assert spearman(X, Y) == pytest.approx(reference_spearman(X, Y), abs=1e-12)
    assert kendall_tau_b(X, Y) == pytest.approx(reference_kendall_b(X, Y), abs=1e-12)
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties on both
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 3, 1]) == pytest.approx(reference_kendall_b(
        [1, 2, 3, 4], [4, 3, 3, 1]))  # fmt: skip
    assert spearman([1, 2], [2, 1]) is None and kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def test_bootstrap_interval_equals_an_explicit_resampling_loop():
    options = StatisticsOptions(bootstrap=300, confidence=0.9)
    n = len(X)
    rows = np.random.default_rng(7).integers(0, n, size=(300, n))  # as documented
    rhos = []
    for row in rows:
        rho = reference_spearman([X[i] for i in row], [Y[i] for i in row])
        if rho is not None:
            rhos.append(rho)
    low, high, kept = bootstrap_interval(X, Y, options, seed=7)
    assert kept == len(rhos)
    assert low == pytest.approx(linear_quantile(rhos, 0.05), abs=1e-12)
    assert high == pytest.approx(linear_quantile(rhos, 0.95), abs=1e-12)
    other = bootstrap_interval(X, Y, options, seed=8)
    assert other != (low, high, kept)  # the seed matters


def test_permutation_p_exact_for_few_models_and_drawn_for_many():
    x, y = X[:6], Y[:6]
    observed = abs(reference_spearman(x, y))
    exact = [abs(reference_spearman(x, [y[i] for i in order]) or 0)
             for order in itertools.permutations(range(6))]  # fmt: skip
    p, method = permutation_p(x, y, StatisticsOptions())
    assert method == "exact"
    assert p == pytest.approx(sum(r >= observed - 1e-12 for r in exact) / 720)
    options = StatisticsOptions(permutations=200)
    orders = np.random.default_rng(3).permuted(np.tile(np.arange(9), (200, 1)), axis=1)
    observed = abs(reference_spearman(X, Y))
    hits = sum(abs(reference_spearman(X, [Y[i] for i in o])) >= observed - 1e-12 for o in orders)
    assert permutation_p(X, Y, options, seed=3) == (pytest.approx((1 + hits) / 201), "permutation")


def test_few_models_or_a_constant_measure_give_null_with_the_reason():
    options = StatisticsOptions(bootstrap=50)
    two = correlate([1.0, 2.0], [0.1, 0.2], options)
    assert two["spearman"] is None and two["reason"] == "fewer than 3 models (2)"
    flat = correlate([1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4], options)
    assert flat["spearman"] is None and flat["kendall_tau_b"] is None
    assert flat["reason"] == "the measure is the same for every model"
    assert (
        correlate(X, [0.0] * len(X), options)["reason"]
        == "the OOD gain is the same for every model"
    )
    full = correlate(X, Y, options)
    assert full["reason"] is None and full["p_method"] == "permutation"
    assert full["excludes_zero"] == (full["interval"][0] > 0 or full["interval"][1] < 0)
    assert correlate(X[:4], Y[:4], options)["interval"] is None  # too few models to resample


# --- a study of checkpoints: the single commands' numbers, resumable ---------------------


def study_args(root, zero_shot, in_dist, shifted):
    checkpoints = [root / f"ft{i}.safetensors" for i in range(3)]
    return [zero_shot, *checkpoints, "--id", in_dist, "--ood", shifted, "--device", "cpu",
            "--alphas", "0:1:0.25", "--sharpness-alphas", "0,1", "--iterations", "3",
            "--rho", "0.3", "--top-k", "1", "--bootstrap", "200"]  # fmt: skip


@pytest.fixture(scope="module")
def study(pair, reports):
    root = reports[0].parent
    args = study_args(root, pair.zero_shot, pair.in_dist, pair.shifted)
    result = succeeds("study", *args, "-o", root / "study.json")
    return root, args, json.loads((root / "study.json").read_text()), result


def test_study_of_checkpoints_gives_the_numbers_of_the_single_commands(pair, reports, study):
    root, _, doc, result = study
    assert doc["inputs"]["num_checkpoints"] == 3
    rows = {r["name"]: r for r in doc["results"]["checkpoints"]}
    for i in range(3):
        name = f"ft{i}"
        made = {k: json.loads(Path(f).read_text()) for k, f in rows[name]["files"].items()}
        assert (
            Path(rows[name]["files"]["interpolate"])
            == root / "study.reports" / f"{name}.interpolate.json"
        )
        alone = {
            "interpolate": json.loads(reports[2 * i].read_text()),
            "sharpness": json.loads(reports[2 * i + 1].read_text()),
            "stragglers": json.loads(succeeds(
                "stragglers", pair.zero_shot, root / f"{name}.safetensors", "--id", pair.in_dist,
                "--ood", pair.shifted, "--device", "cpu", "--iterations", "3", "--rho", "0.3",
                "--top-k", "1", "-o", "-").stdout),
        }  # fmt: skip
        for command, expected in alone.items():
            assert made[command]["results"] == expected["results"], (name, command)
            assert made[command]["summary"] == expected["summary"], (name, command)
            assert made[command]["inputs"]["checkpoints"] == expected["inputs"]["checkpoints"]
        measures = rows[name]["measures"]
        assert measures["gain[shifted]"] == alone["interpolate"]["summary"]["shifted"]["gain"]
        assert (
            measures["sharpness@1[shifted]"]
            == alone["sharpness"]["summary"]["shifted"][0]["fine_tuned"]
        )
        assert measures["stragglers"] == len(alone["stragglers"]["summary"]["stragglers"])
        zs, ft = load_file(str(pair.zero_shot)), load_file(str(root / f"{name}.safetensors"))
        diff = sum(float((ft[k].double() - zs[k].double()).pow(2).sum()) for k in zs)
        base = sum(float(zs[k].double().pow(2).sum()) for k in zs)
        assert measures["relative_change"] == pytest.approx(math.sqrt(diff / base), rel=1e-9)
        assert measures["relative_change_text"] == 0.0  # fine_tune_like moves the image tower
    found = doc["summary"]["correlations"]["shifted"]
    assert found["relative_change_text"]["spearman"] is None
    assert found["relative_change_text"]["reason"] == "the measure is the same for every model"
    gains = [rows[f"ft{i}"]["measures"]["gain[shifted]"] for i in range(3)]
    sizes = [rows[f"ft{i}"]["measures"]["relative_change"] for i in range(3)]
    assert found["relative_change"]["spearman"] == pytest.approx(reference_spearman(sizes, gains))
    ranked = doc["summary"]["ranking"]["shifted"]
    values = [abs(found[m]["spearman"]) for m in ranked if found[m]["spearman"] is not None]
    assert values == sorted(values, reverse=True)
    assert "relative_change" in result.stderr  # the table


@pytest.mark.slow  # a subprocess killed mid-study, then resumed
def test_study_resumes_after_a_kill_and_recomputes_nothing_finished(pair, study, tmp_path):
    root, args, reference, _ = study
    output, folder = tmp_path / "study.json", tmp_path / "study.reports"
    command = [sys.executable, "-m", "clipsharp", "study", *map(str, args), "-o", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = folder / "ft0.stragglers.json"
    deadline = time.monotonic() + 300
    while not finished.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert finished.exists() and not output.exists(), "the study was not cut short"
    first = {p.name: p.stat().st_mtime_ns for p in folder.glob("ft0.*.json")}
    assert len(first) == 3
    result = succeeds("study", *args, "-o", output, "--resume")
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("ft0.*.json")} == first
    assert result.stderr.count("not recomputed") >= 3
    assert not list(folder.glob("*.partial*"))
    doc = json.loads(output.read_text().replace(str(tmp_path), str(root)))
    for key in ("created", "timing"):
        doc.pop(key), reference.pop(key, None)
    assert doc == {k: v for k, v in reference.items() if k not in ("created", "timing")}


def no_nan(text):
    raise AssertionError(f"{text} in the JSON")


def test_study_of_two_models_has_no_correlation(reports):
    doc = json.loads(succeeds("study", *reports[:4], "-o", "-").stdout, parse_constant=no_nan)
    for found in doc["summary"]["correlations"]["shifted"].values():
        assert found["spearman"] is None and found["interval"] is None
        assert found["reason"] == "fewer than 3 models (2)"


def test_plot_draws_a_scatter_per_measure_labelled_by_model(study):
    from clipsharp.reports.plot import figures

    _, _, doc, _ = study
    (fig,) = figures([doc], ["study.json"])
    found = doc["summary"]["correlations"]["shifted"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert len(panels) == len(found)
    rho = found["relative_change"]["spearman"]
    ax = panels[f"relative_change\nρ = {rho:+.2f}"]
    (points,) = [c for c in ax.get_children() if (c.get_gid() or "").startswith("scatter:")]
    rows = doc["results"]["checkpoints"]
    expected = [[r["measures"]["relative_change"], r["measures"]["gain[shifted]"]] for r in rows]
    assert points.get_offsets().tolist() == expected
    names = sorted(
        c.get_gid() for c in ax.get_children() if (c.get_gid() or "").startswith("model:")
    )
    assert names == ["model:ft0", "model:ft1", "model:ft2"]
    assert any("none (the measure is the same for every model)" in t for t in panels)


def test_reports_of_other_commands_are_skipped_with_a_note(pair, tmp_path):
    """A folder of reports (the demo's) holds prune and inspect reports too: left out."""
    inspect = tmp_path / "inspect.json"
    succeeds("inspect", pair.zero_shot, "-o", inspect)
    alone = invoke("study", inspect, "-o", "-")
    assert alone.exit_code == 2 and "none of the reports is one a study reads" in alone.stderr
    path = tmp_path / "path.json"
    succeeds("interpolate", pair.zero_shot, pair.fine_tuned, "--ood", pair.shifted,
             "--device", "cpu", "--alphas", "0,1", "-o", path)  # fmt: skip
    result = succeeds("study", path, inspect, "-o", tmp_path / "s.json")
    assert f"{inspect} is not a report a study reads; skipped" in result.output
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["inputs"]["skipped"] == [str(inspect)] and doc["inputs"]["reports"] == [str(path)]

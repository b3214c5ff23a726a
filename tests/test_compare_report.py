"""Temperature scaling per run, the summary keys, the figures and the report's computed sentences.

Most tests build a :class:`CompareResult` from runs with chosen numbers, so that every sentence the report
writes can be checked against numbers known in advance.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import compare_helpers as helpers
from compare_helpers import check_png, check_svg, summary_keys
from labelsmooth.experiments import compare
from labelsmooth.experiments._analysis import summarize
from labelsmooth.experiments._figures import epoch_means, penultimate_figure, reliability_figure, render
from labelsmooth.experiments._results import CompareResult, RunResult
from labelsmooth.experiments.evaluate import Predictions, clipped, fit_scaling
from labelsmooth.experiments.provenance import call_text, git_commit
from labelsmooth.experiments.report import captions, report_markdown, temperature_answer, verdicts
from labelsmooth.experiments.train import TrainConfig
from labelsmooth.metrics import expected_calibration_error, reliability_bins

CLASSIFICATION = ("accuracy", "nll", "ece", "smooth_ece", "adaptive_ece", "classwise_ece", "brier", "aurc")
BINS = reliability_bins(torch.tensor([[0.6, 0.4]]), torch.tensor([0]))


def calibrated(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from their own softmax: these logits are calibrated (T = 1 is right)."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 2.5], ids=["under-confident", "over-confident"])
def test_temperature_scaling_recovers_a_known_temperature(temperature):
    """Logits ``T * z`` of calibrated logits ``z`` (so ``z`` = logits / T): the fit on them gives back T."""
    true_logits, labels = calibrated(20_000, 5, seed=0)
    fitted, at_bound = fit_scaling(Predictions(true_logits * temperature, labels, 5))
    assert not at_bound
    assert fitted == pytest.approx(temperature, rel=0.05)
    # Scaled by the fitted T, the test predictions are as calibrated as the true logits.
    test_logits, test_labels = calibrated(20_000, 5, seed=1)
    scaled = Predictions(test_logits * temperature, test_labels, 5).scaled(fitted)
    reference = expected_calibration_error(torch.softmax(test_logits, 1), test_labels)
    assert expected_calibration_error(scaled.probs, test_labels) == pytest.approx(reference, abs=0.01)


def test_a_perfectly_separated_validation_split_is_flagged_at_the_bound():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    fitted, at_bound = fit_scaling(Predictions(logits, torch.tensor([0, 1]), 2))
    assert at_bound and fitted == 0.01


def run(alpha, seed, *, metrics=None, scaled=None, temperature=1.5, history=(), projection=None,
        learned=True):
    metrics = metrics or {name: 0.5 for name in CLASSIFICATION}
    result = RunResult(alpha, seed, dict(metrics), BINS, list(history),
                       {"learned": learned, "reasons": [] if learned else ["forced"]},
                       scaled=dict(scaled if scaled is not None else metrics), temperature=temperature,
                       temperature_ok=None if temperature is None else True)
    if projection is not None:
        result.projection, result.projection_labels, result.projection_classes = projection
    return result


def constructed(runs, alphas=(0.0, 0.1), task="classification") -> CompareResult:
    seeds = sorted({r.seed for r in runs})
    result = CompareResult("made", task, 3, ("a", "b", "c"), list(alphas), seeds, TrainConfig(1, 1, 1.0),
                           list(runs))
    summarize(result)
    return result


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_summary_keys_are_exactly_the_issues(task):
    names = CLASSIFICATION + (("miou",) if task == "segmentation" else ())
    values = {name: 0.5 for name in names}
    result = constructed([run(a, s, metrics=values) for a in (0.0, 0.1) for s in (0, 1)], task=task)
    for row in result.summary:
        assert set(row) == {"alpha", "n_seeds", "n_ts", "n_es", *summary_keys(names)}


def test_summary_averages_the_scaled_metrics_and_the_temperature():
    runs = [run(0.0, 0, temperature=1.0, scaled={**dict.fromkeys(CLASSIFICATION, 0.5), "ece": 0.02}),
            run(0.0, 1, temperature=2.0, scaled={**dict.fromkeys(CLASSIFICATION, 0.5), "ece": 0.04})]
    row = constructed(runs, alphas=(0.0,)).summary[0]
    assert row["temperature_mean"] == pytest.approx(1.5)
    assert row["ece_ts_mean"] == pytest.approx(0.03)
    assert row["ece_ts_ci95"] == pytest.approx(12.706204736174698 * 0.01)  # t_{0.975, 1} * sd / sqrt(2)


def test_no_validation_split_leaves_the_scaled_values_empty():
    runs = [RunResult(a, s, dict.fromkeys(CLASSIFICATION, 0.5), BINS) for a in (0.0, 0.1) for s in (0, 1)]
    result = constructed(runs)
    assert result.summary[0]["ece_ts_mean"] is None and result.summary[0]["temperature_mean"] is None
    assert {c["scaling"] for c in result.comparisons} == {"none"}
    assert "no validation split" in temperature_answer(result)[0]


def metrics_with(**values):
    return {**dict.fromkeys(CLASSIFICATION, 0.5), **values}


def two_alpha_result(accuracy_gain: float, ece_ts_change: float, nll_change: float) -> CompareResult:
    """Seeds 0-2; alpha 0.1 shifted by the given amounts (with a small seed-dependent wobble)."""
    runs = []
    for seed in range(3):
        wobble = 0.001 * seed
        runs.append(run(0.0, seed, metrics=metrics_with(accuracy=0.9 + wobble, nll=0.3, ece=0.05),
                        scaled=metrics_with(accuracy=0.9 + wobble, nll=0.28, ece=0.02 + wobble)))
        runs.append(run(0.1, seed, metrics=metrics_with(accuracy=0.9 + accuracy_gain + 2 * wobble,
                                                        nll=0.3 + nll_change + wobble, ece=0.12),
                        scaled=metrics_with(accuracy=0.9 + accuracy_gain + 2 * wobble, nll=0.28,
                                            ece=0.02 + ece_ts_change + 2 * wobble)))
    return constructed(runs)


def test_verdict_sentences_on_a_constructed_result():
    result = two_alpha_result(accuracy_gain=0.02, ece_ts_change=0.0, nll_change=0.1)
    accuracy, ece, nll = verdicts(result)
    assert accuracy == ("- **Accuracy**: best at alpha 0.1 (92.2 ± 0.5%), +2.1 ± 0.248 points against "
                        "alpha 0: better, outside the noise.")
    assert ece == ("- **ECE after temperature scaling**: best at alpha 0 (0.021 ± 0.002), the baseline; "
                   "against it: alpha 0.1 +0.001 ± 0.00248 (inside the noise).")
    assert nll.startswith("- **NLL**: best at alpha 0 (0.300 ± 0.000), the baseline; against it: "
                          "alpha 0.1 +0.101")
    assert nll.endswith("(worse, outside the noise).")


def test_a_run_that_did_not_learn_makes_every_verdict_not_comparable():
    result = two_alpha_result(accuracy_gain=0.02, ece_ts_change=0.0, nll_change=0.1)
    result.runs[0].check = {"learned": False, "reasons": ["forced"]}
    summarize(result)
    assert all("not comparable (a run did not learn)" in sentence for sentence in verdicts(result))


def test_the_answer_against_temperature_scaling_is_computed():
    """alpha 0.1 at T = 1 (ECE 0.12) against alpha 0 scaled (ECE 0.02 + wobble): scaling wins."""
    result = two_alpha_result(accuracy_gain=0.0, ece_ts_change=0.0, nll_change=0.0)
    (answer,) = temperature_answer(result)
    assert answer.startswith("- alpha 0.1 against temperature scaling at alpha 0 (T = 1.50 ± 0.00): "
                             "ECE 0.120 ± 0.000 against 0.021 ± 0.002, +0.099 ± 0.00248 "
                             "(worse, outside the noise)")
    assert answer.endswith("So on ECE temperature scaling calibrates better than smoothing alone.")


def cluster(spread: float, seed: int = 0):
    """Three classes at the corners of a unit triangle, Gaussian with standard deviation ``spread``."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.8]])
    labels = np.repeat([0, 1, 2], 50)
    return corners[labels] + rng.normal(0, spread, size=(150, 2)), labels, (0, 1, 2)


@pytest.mark.parametrize(("spread", "word"), [(0.2, "looser"), (0.05, "tighter")], ids=["grew", "shrank"])
def test_penultimate_caption_follows_the_measured_ratio(spread, word):
    result = constructed([run(0.0, 0, projection=cluster(0.1)), run(0.1, 0, projection=cluster(spread))])
    ratio = result.runs[1].cluster_tightness() / result.runs[0].cluster_tightness()
    assert (ratio > 1) == (word == "looser")
    caption = captions(result)["penultimate"]
    assert f"At alpha 0.1 the clusters are {word} than at alpha 0 (ratio {ratio:.2f})" in caption
    assert f"clusters are {'tighter' if word == 'looser' else 'looser'}" not in caption


@pytest.mark.parametrize("scale", ["shared", "own"])
def test_penultimate_panels_share_one_scale_when_asked(scale):
    result = constructed([run(0.0, 0, projection=cluster(0.05)), run(0.1, 0, projection=cluster(0.5))])
    result.penultimate_scale = scale
    figure = penultimate_figure(result)
    figure.canvas.draw()  # datalim aspect adjusts the limits at draw time
    first, second = figure.axes[:2]
    same = first.get_xlim() == second.get_xlim() and first.get_ylim() == second.get_ylim()
    assert same == (scale == "shared")


def test_reliability_panels_wrap_three_to_a_row_and_title_the_pooled_ece(tmp_path):
    alphas = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)
    generator = torch.Generator().manual_seed(0)
    pooled = {}
    runs = []
    for k, alpha in enumerate(alphas):
        probs_of_seeds = []
        for seed in (0, 1):
            probs = torch.softmax(torch.randn(40 + 20 * seed, 3, generator=generator) * (1 + k), 1)
            labels = torch.randint(0, 3, (probs.shape[0],), generator=generator)
            probs_of_seeds.append((probs, labels))
            r = run(alpha, seed)
            r.bins = reliability_bins(probs, labels, n_bins=15)
            runs.append(r)
        pooled[alpha] = expected_calibration_error(torch.cat([p for p, _ in probs_of_seeds]),
                                                   torch.cat([y for _, y in probs_of_seeds]))
    result = constructed(runs, alphas=alphas)
    for alpha in alphas:
        assert result.reliability(alpha)["ece"] == pytest.approx(pooled[alpha], abs=1e-12)
        assert sum(result.reliability(alpha)["count"]) == 100
    figure = reliability_figure(result)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [f"alpha = {a:g}   ECE = {pooled[a]:.3f}" for a in alphas]
    png, svg = render(figure)
    (tmp_path / "r.png").write_bytes(png)
    (tmp_path / "r.svg").write_bytes(svg)
    width, height = check_png(tmp_path / "r.png")
    check_svg(tmp_path / "r.svg")
    assert width == round(3 * 3.6 * 150) and height == round(2 * 4.6 * 150)  # two rows of three
    assert render(reliability_figure(result))[1] == svg  # the SVG is the same bytes every time


def test_curves_are_the_mean_over_seeds():
    history = [[{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}],
               [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": math.nan}]]
    result = constructed([run(0.0, s, history=h) for s, h in enumerate(history)], alphas=(0.0,))
    assert epoch_means(result, 0.0, "val_loss") == ([1, 2], [2.0, 0.5])
    assert captions(result)["curves"] == "Mean validation NLL over seeds: alpha 0: lowest at epoch 2 of 2 " \
        "(0.500; 0.500 at the end)."


def test_report_has_provenance_and_the_bin_data_is_saved(tmp_path):
    out = tmp_path / "out"
    result = compare(**{**helpers.options(), "seeds": 2}, out=out)
    report = (out / "report.md").read_text()
    provenance = report[report.index("## Provenance"):report.index("## Setup")]
    assert f"torch {torch.__version__}" in provenance and "labelsmooth " in provenance
    assert "- Python call: `compare(model=compare_helpers.make_model, train=<TensorDataset>" in provenance
    assert "wall time " in provenance and "device: cpu" in provenance
    # The working directory's commit (another process may commit meanwhile: check its form, not its value).
    line = next(x for x in provenance.splitlines() if x.startswith("- git commit of the working directory: "))
    if git_commit(Path.cwd()) is None:
        assert line.endswith("none (not a git working directory)")
    else:
        assert re.fullmatch(r"- git commit of the working directory: [0-9a-f]{40}( \+ uncommitted changes)?",
                            line)
    lines = report.splitlines()
    # Runs whose temperature fit is left out are named first (this tiny validation split has few errors).
    first = 4 if any(r.temperature_ok is False for r in result.runs) else 2
    assert lines[2].startswith("> **Temperature fits left out**") == (first == 4)
    assert lines[first].startswith("- **Accuracy**: ") and lines[first + 1].startswith("- **ECE after temp")
    assert lines[first + 2].startswith("- **NLL**: ") and lines[first + 3] == ""
    # Then the answer against early stopping, one sentence per headline metric that has values.
    answer = lines[first + 4:lines.index("", first + 4)]
    assert 1 <= len(answer) <= 3 and answer[0].startswith("- **Accuracy against early stopping**: ")
    assert lines[first + 5 + len(answer)].startswith("Best alpha per metric")
    document = json.loads((out / "metrics.json").read_text())
    assert "provenance" not in json.dumps(document)  # metrics.json stays the same on resume
    for bins, alpha in zip(document["reliability"], (0.0, 0.1), strict=True):
        assert bins["alpha"] == alpha and len(bins["edges"]) == 16 and len(bins["count"]) == 15
        assert sum(bins["count"]) == bins["total"] == 2 * 60
        assert bins["ece"] == pytest.approx(result.reliability(alpha)["ece"])
    assert report_markdown(result) == report


def test_git_commit_is_none_outside_a_repository(tmp_path):
    assert git_commit(tmp_path) is None
    inside = subprocess.run(["git", "-C", str(helpers.HERE), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=False)
    if inside.returncode == 0:
        assert git_commit(helpers.HERE).startswith(inside.stdout.strip())


def test_call_text_shows_what_differs_from_the_defaults():
    shown = call_text({"dataset": "mnist1d", "alphas": [0.0, 0.3], "seeds": 3, "model": None,
                       "out": Path("runs/x")}, {"alphas": (0.0, 0.1), "seeds": 3, "model": None, "out": None})
    assert shown == "compare('mnist1d', alphas=[0.0, 0.3], out='runs/x')"


def test_intervals_of_bounded_metrics_stay_inside_their_range_and_two_seeds_are_called_too_wide():
    runs = [run(a, s, metrics=metrics_with(accuracy=acc, ece=ece)) for a in (0.0, 0.1)
            for s, acc, ece in ((0, 0.0, 0.01), (1, 0.5, 0.2))]
    result = constructed(runs)
    row = result.summary[0]
    assert row["accuracy_mean"] - row["accuracy_ci95"] < 0 and row["ece_mean"] - row["ece_ci95"] < 0
    table = report_markdown(result)
    # 25.0 ± 317.6% would claim accuracies below 0 and above 100%: the interval is clipped to [0, 100].
    assert "25.0 [0.0, 100.0]" in table and "± 317" not in table
    assert "0.105 [0.000, 1.000]" in table
    assert "With two seeds the interval is 12.7 standard errors wide on each side: too wide" in table
    assert clipped(0.25, 3.0, "accuracy") == (0.0, 1.0) and clipped(0.2, 0.5, "nll") == (0.0, 0.7)
    assert clipped(1.5, 9.0, "brier_ts") == (0.0, 2.0) and clipped(1.0, 0.5, "temperature") == (0.5, 1.5)


def test_a_partial_report_ranks_alphas_on_the_seeds_they_all_finished():
    runs = [run(0.0, 0, metrics=metrics_with(accuracy=0.5)), run(0.0, 1, metrics=metrics_with(accuracy=0.9)),
            run(0.1, 0, metrics=metrics_with(accuracy=0.6))]
    result = CompareResult("made", "classification", 3, ("a", "b", "c"), [0.0, 0.1], [0, 1],
                           TrainConfig(1, 1, 1.0), runs, partial=True)
    summarize(result)
    assert result.shared_seeds() == [0]
    # Over its own seeds alpha 0 would average 0.7 and rank first; on the shared seed it is 0.5 against 0.6.
    assert [(row["alpha"], row["n_seeds"], row["accuracy_mean"]) for row in result.summary] == [
        (0.0, 1, 0.5), (0.1, 1, 0.6)]
    report = report_markdown(result)
    assert "best at alpha 0.1 (60.0%)" in report
    assert "use only the seeds every alpha finished (0)" in report
    result.partial = False
    summarize(result)
    assert result.summary[0]["n_seeds"] == 2 and result.summary[0]["accuracy_mean"] == pytest.approx(0.7)

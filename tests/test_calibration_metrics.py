"""Brier, Smooth ECE, adaptive and class-wise ECE, AURC and temperature scaling against references.

Each reference is written here in float64 numpy from the metric's definition (or is the library that
defines it: relplot, scikit-learn, scipy); none of them calls labelsmooth.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from labelsmooth.metrics import (
    _binned,
    adaptive_ece,
    aurc,
    brier_score,
    classwise_ece,
    fit_temperature,
    smooth_ece,
)


def softmax_outputs(
    seed: int, n: int, c: int, *, margin: float = 2.0, flip: float = 0.2, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax rows of a model that boosts the true class, except for a fraction ``flip`` of samples."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=generator)
    logits = torch.randn(n, c, generator=generator, dtype=torch.float64) * scale
    wrong = torch.rand(n, generator=generator) < flip
    boosted = torch.where(wrong, torch.randint(0, c, (n,), generator=generator), labels)
    logits[torch.arange(n), boosted] += margin
    return torch.softmax(logits, dim=1), labels


def top_label(probs: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p = probs.double().numpy()
    return p.max(axis=1), (p.argmax(axis=1) == labels.numpy()).astype(np.float64)


def one_hot(labels: torch.Tensor, c: int) -> np.ndarray:
    return np.eye(c)[labels.numpy()]


def confident(labels: torch.Tensor, c: int, *, right: bool) -> torch.Tensor:
    """Probability 1 on the true class (right) or on the next class (wrong)."""
    predicted = labels if right else (labels + 1) % c
    return torch.nn.functional.one_hot(predicted, c).double()


ZEROS3 = torch.zeros(3, dtype=torch.long)

CASES = {
    "10-classes": (0, 400, 10, {}),
    "3-classes-noisy": (1, 97, 3, {"margin": 0.5, "flip": 0.4}),
    "100-classes-peaked": (2, 300, 100, {"margin": 6.0, "scale": 2.0}),
    "binary": (3, 250, 2, {"margin": 1.0}),
    "one-sample": (4, 1, 5, {}),
    "two-samples": (5, 2, 4, {}),
}
CASE_IDS = list(CASES)


def case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    seed, n, c, options = CASES[name]
    return softmax_outputs(seed, n, c, **options)


# --- Brier score ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_IDS)
def test_brier_matches_one_hot_formula_and_sklearn(name):
    probs, labels = case(name)
    c = probs.shape[1]
    expected = np.mean(np.sum((probs.numpy() - one_hot(labels, c)) ** 2, axis=1))
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    sklearn_value = sklearn_metrics.brier_score_loss(
        labels.numpy(), probs.numpy(), labels=list(range(c)), scale_by_half=False
    )
    assert brier_score(probs, labels) == pytest.approx(expected, abs=1e-12)
    assert brier_score(probs, labels) == pytest.approx(sklearn_value, abs=1e-12)


@pytest.mark.parametrize(
    ("right", "expected"), [(True, 0.0), (False, 2.0)], ids=["all-right-at-1", "all-wrong-at-1"]
)
def test_brier_extremes(right, expected):
    labels = torch.tensor([0, 3, 2, 2, 1])
    assert brier_score(confident(labels, 4, right=right), labels) == expected


def test_brier_uniform_prediction_is_one_minus_one_over_c():
    probs = torch.full((6, 8), 1 / 8)
    assert brier_score(probs, torch.arange(6)) == pytest.approx(1 - 1 / 8, abs=1e-7)


def test_brier_one_class_is_zero():
    assert brier_score(torch.ones(3, 1), torch.zeros(3, dtype=torch.long)) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_brier_low_precision_softmax_accepted_and_computed_in_float64(dtype):
    logits = torch.randn(64, 1000, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(8))
    probs = torch.softmax(logits.to(dtype), dim=1)
    expected = np.mean(np.sum((probs.double().numpy() - one_hot(labels, 1000)) ** 2, axis=1))
    assert brier_score(probs, labels) == pytest.approx(expected, abs=1e-12)


# --- adaptive ECE --------------------------------------------------------------------------------------


def reference_adaptive_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """TorchUncertainty's AdaptiveCalibrationError(norm="l1") re-derived: sort, array_split, weighted gaps."""
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for conf_bin, acc_bin in zip(
        np.array_split(confidence[order], n_bins), np.array_split(correct[order], n_bins), strict=True
    ):
        if len(conf_bin):
            total += len(conf_bin) / len(confidence) * abs(acc_bin.mean() - conf_bin.mean())
    return total


@pytest.mark.parametrize("n_bins", [15, 4, 1], ids=["15-bins", "4-bins", "1-bin"])
@pytest.mark.parametrize("name", CASE_IDS)
def test_adaptive_ece_matches_equal_mass_reference(name, n_bins):
    probs, labels = case(name)
    confidence, correct = top_label(probs, labels)
    assert len(np.unique(confidence)) == len(confidence)  # no ties: the reference's order is then unique
    expected = reference_adaptive_ece(confidence, correct, n_bins)
    assert adaptive_ece(probs, labels, n_bins=n_bins) == pytest.approx(expected, abs=1e-12)


def test_adaptive_ece_shares_a_tied_run_across_bins():
    # Four samples at confidence 0.8, two right: each of the two bins gets half the run's right
    # answers, |0.5 - 0.8| in both. Splitting by input order would give (|1 - 0.8| + |0 - 0.8|) / 2.
    probs = torch.tensor([[0.8, 0.2]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert adaptive_ece(probs, labels, n_bins=2) == pytest.approx(0.3, abs=1e-12)


def test_adaptive_ece_does_not_depend_on_sample_order():
    # 200 samples sharing 6 distinct rows: long runs of tied confidences, as a quantized model gives.
    rows, _ = softmax_outputs(6, 6, 4)
    generator = torch.Generator().manual_seed(11)
    probs = rows[torch.randint(0, 6, (200,), generator=generator)]
    labels = torch.randint(0, 4, (200,), generator=generator)
    permutation = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    assert adaptive_ece(probs[permutation], labels[permutation]) == pytest.approx(
        adaptive_ece(probs, labels), abs=1e-12
    )


# --- class-wise ECE ------------------------------------------------------------------------------------


def reference_classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Per class, numpy-histogram bins of p_c; weighted |frequency - mean p_c|; mean over classes."""
    n, c = probs.shape
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    errors = []
    for k in range(c):
        p = probs[:, k]
        hit = (labels == k).astype(np.float64)
        index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
        error = 0.0
        for m in range(n_bins):
            inside = index == m
            if inside.any():
                error += inside.sum() / n * abs(hit[inside].mean() - p[inside].mean())
        errors.append(error)
    return float(np.mean(errors))


@pytest.mark.parametrize("n_bins", [15, 5], ids=["15-bins", "5-bins"])
@pytest.mark.parametrize("name", CASE_IDS)
def test_classwise_ece_matches_histogram_reference(name, n_bins):
    probs, labels = case(name)
    expected = reference_classwise_ece(probs.numpy(), labels.numpy(), n_bins)
    assert classwise_ece(probs, labels, n_bins=n_bins) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", CASE_IDS)
def test_classwise_ece_in_blocks_of_a_few_rows_matches_the_reference(name, monkeypatch):
    probs, labels = case(name)
    monkeypatch.setattr(_binned, "_BLOCK_ELEMENTS", 3 * probs.shape[1])  # 3 rows a block, a short last one
    expected = reference_classwise_ece(probs.numpy(), labels.numpy(), 15)
    assert classwise_ece(probs, labels, n_bins=15) == pytest.approx(expected, abs=1e-12)


def test_classwise_ece_counts_probabilities_at_zero_and_one():
    # Bin edges exactly hit: 0, 1 and 0.5 (an edge of 2 bins) must all land in some bin.
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    expected = reference_classwise_ece(probs.numpy(), labels.numpy(), 2)
    assert classwise_ece(probs, labels, n_bins=2) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("right", "expected"), [(True, 0.0), (False, 2 / 4)], ids=["all-right-at-1", "all-wrong-at-1"]
)
def test_classwise_ece_extremes(right, expected):
    # All wrong: each class's bin at 0 misses its true samples, its bin at 1 its predicted ones: 2N / (N C).
    labels = torch.tensor([0, 3, 2, 2, 1, 0])
    assert classwise_ece(confident(labels, 4, right=right), labels) == pytest.approx(expected, abs=1e-12)


# --- AURC ----------------------------------------------------------------------------------------------


def reference_aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """TorchUncertainty's AURC re-derived: risk of the k most confident, trapezoid over k/N, / (1 - 1/N)."""
    n = len(confidence)
    errors = 1.0 - correct[np.argsort(-confidence, kind="stable")]
    risk = np.cumsum(errors) / np.arange(1, n + 1)
    coverage = np.arange(1, n + 1) / n
    return float(np.trapezoid(risk, coverage) / (1 - 1 / n))


@pytest.mark.parametrize("name", [n for n in CASE_IDS if n != "one-sample"])
def test_aurc_matches_torch_uncertainty_definition(name):
    probs, labels = case(name)
    confidence, correct = top_label(probs, labels)
    assert len(np.unique(confidence)) == len(confidence)
    assert aurc(probs, labels) == pytest.approx(reference_aurc(confidence, correct), abs=1e-12)


def test_aurc_with_ties_is_the_mean_over_all_orders_of_the_tied_samples():
    conf = [0.9, 0.7, 0.7, 0.7, 0.6, 0.6, 0.5]
    right = [1, 0, 1, 1, 0, 1, 0]
    probs = torch.tensor([[c, 1 - c] for c in conf], dtype=torch.float64)
    labels = torch.tensor([0 if r else 1 for r in right])
    runs = [[0], [1, 2, 3], [4, 5], [6]]
    values = []
    for orders in itertools.product(*(itertools.permutations(run) for run in runs)):
        order = [i for run in orders for i in run]
        values.append(reference_aurc(np.linspace(1, 0, 7), np.array(right, dtype=float)[order]))
    assert len(values) == 12
    assert aurc(probs, labels) == pytest.approx(np.mean(values), abs=1e-12)


@pytest.mark.parametrize(
    ("right", "expected"), [(True, 0.0), (False, 1.0)], ids=["all-right", "all-wrong"]
)
def test_aurc_extremes(right, expected):
    labels = torch.tensor([0, 3, 2, 2, 1])
    probs = confident(labels, 4, right=right) * 0.7 + 0.3 / 4
    assert aurc(probs, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("label", "expected"), [(0, 0.0), (1, 1.0)], ids=["right", "wrong"])
def test_aurc_one_sample_is_its_risk(label, expected):
    assert aurc(torch.tensor([[0.6, 0.4]]), torch.tensor([label])) == expected


def test_aurc_rewards_ranking_errors_last():
    # Same accuracy (2 of 4), errors most confident vs least confident.
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]], dtype=torch.float64)
    errors_first, errors_last = torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1])
    assert aurc(probs, errors_last) < aurc(probs, errors_first)
    confidence, _ = top_label(probs, errors_last)
    assert aurc(probs, errors_last) == pytest.approx(reference_aurc(confidence, np.array([1.0, 1, 0, 0])))


# --- Smooth ECE ----------------------------------------------------------------------------------------


def dense_smooth_ece(confidence: np.ndarray, correct: np.ndarray, sigma: float, points: int = 8000) -> float:
    """smECE_sigma from the definition: the Gaussian summed over mirror images in 0 and 1, midpoint rule.

    Images 2k +- c for |k| <= 2: the nearest one left out is 5 away, over 7 sigma for sigma <= 0.7.
    """
    t = (np.arange(points) + 0.5) / points
    residual = correct - confidence
    smoothed = np.zeros(points)
    for k in range(-2, 3):
        for image in (2 * k + confidence, 2 * k - confidence):
            distance = t[:, None] - image[None, :]
            smoothed += np.exp(-0.5 * (distance / sigma) ** 2) @ residual
    smoothed /= sigma * math.sqrt(2 * math.pi) * len(confidence)
    return float(np.abs(smoothed).mean())


RELPLOT_CASES = {
    "10-classes": (0, 2000, 10, {"margin": 2.0, "flip": 0.1}),
    "10-classes-noisy": (1, 5000, 10, {"margin": 3.0, "flip": 0.3}),
    "100-classes-underconfident": (2, 1000, 100, {"margin": 4.0, "flip": 0.2}),
    "binary": (3, 3000, 2, {"margin": 1.0, "flip": 0.2}),
    "5-classes-calibrated-ish": (5, 500, 5, {"margin": 1.5, "flip": 0.0}),
}


@pytest.mark.parametrize("bandwidth", [None, 0.05, 0.1], ids=["fixpoint", "sigma-0.05", "sigma-0.1"])
@pytest.mark.parametrize("name", list(RELPLOT_CASES))
def test_smooth_ece_matches_relplot(name, bandwidth):
    relplot = pytest.importorskip("relplot")
    seed, n, c, options = RELPLOT_CASES[name]
    probs, labels = softmax_outputs(seed, n, c, **options)
    f, y = relplot.multiclass_logits_to_confidences(probs.numpy(), labels.numpy(), probs=True)
    # relplot gives confidences within one of its grid steps (1e-3) of 1 half their weight; keep clear of it.
    assert f.max() < 0.999
    expected = relplot.smECE(f, y) if bandwidth is None else relplot.smECE_sigma(f, y, bandwidth)
    assert smooth_ece(probs, labels, bandwidth=bandwidth) == pytest.approx(expected, abs=1e-3)


def test_smooth_ece_weighs_confidences_near_one_fully_where_relplot_halves_them():
    """Pins what the docstring says: relplot counts a confidence within 1e-3 of 1 at half weight."""
    relplot = pytest.importorskip("relplot")
    conf = torch.tensor([0.9995] * 100 + [0.6] * 100, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], dim=1)
    labels = torch.tensor([0] * 80 + [1] * 20 + [0] * 60 + [1] * 40)  # 80% and 60% right
    f, y = top_label(probs, labels)
    expected = dense_smooth_ece(f, y, 0.05)
    assert smooth_ece(probs, labels, bandwidth=0.05) == pytest.approx(expected, abs=1e-6)
    # Measured: relplot 0.0874, the definition 0.0998 (the residual at 0.9995 counts half).
    assert abs(relplot.smECE_sigma(f, y, 0.05) - expected) > 0.01


SMOOTH_EXTREMES = {
    "confidence-1-all-right": (torch.tensor([[1.0, 0.0]] * 3), torch.tensor([0, 0, 0])),
    "confidence-1-all-wrong": (torch.tensor([[1.0, 0.0]] * 3), torch.tensor([1, 1, 1])),
    "confidence-1-mixed": (torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4]]), torch.tensor([0, 0, 0])),
    "one-sample": (torch.tensor([[0.3, 0.5, 0.2]]), torch.tensor([2])),
    "ties": (torch.tensor([[0.7, 0.3]] * 5 + [[0.5, 0.5]] * 2), torch.tensor([0, 0, 1, 0, 1, 1, 0])),
    "one-class": (torch.ones(4, 1), torch.zeros(4, dtype=torch.long)),
}


@pytest.mark.parametrize("bandwidth", [0.01, 0.1, 0.7], ids=["sigma-0.01", "sigma-0.1", "sigma-0.7"])
@pytest.mark.parametrize("name", [*SMOOTH_EXTREMES, "10-classes", "3-classes-noisy"])
def test_smooth_ece_at_fixed_bandwidth_matches_dense_definition(name, bandwidth):
    probs, labels = SMOOTH_EXTREMES[name] if name in SMOOTH_EXTREMES else case(name)
    confidence, correct = top_label(probs, labels)
    expected = dense_smooth_ece(confidence, correct, bandwidth)
    assert smooth_ece(probs, labels, bandwidth=bandwidth) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["10-classes", "3-classes-noisy", "100-classes-peaked", "binary"])
def test_smooth_ece_is_its_own_bandwidth(name):
    """The fixpoint: smECE at sigma = smECE, and the definition at that sigma agrees."""
    probs, labels = case(name)
    value = smooth_ece(probs, labels)
    assert value > 1e-3
    confidence, correct = top_label(probs, labels)
    assert dense_smooth_ece(confidence, correct, value) == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("confidence-1-all-right", 0.0), ("confidence-1-all-wrong", 1.0), ("one-sample", 0.5)],
    ids=["all-right", "all-wrong", "one-sample"],
)
def test_smooth_ece_extremes(name, expected):
    probs, labels = SMOOTH_EXTREMES[name]
    assert smooth_ece(probs, labels) == pytest.approx(expected, abs=1e-9)


def test_smooth_ece_of_a_calibrated_prediction_is_below_the_floor():
    probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert smooth_ece(probs, labels) < 1e-3


# --- temperature scaling -------------------------------------------------------------------------------


def calibrated_logits(seed: int, n: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=generator, dtype=torch.float64) * 2.5
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


def reference_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 3.5], ids=["T-0.5", "T-1", "T-2", "T-3.5"])
def test_fit_temperature_recovers_a_known_temperature(temperature):
    true_logits, labels = calibrated_logits(0, 20000, 10)
    # The model's logits are the calibrated ones times T, so softmax(logits / T) is calibrated.
    fitted = fit_temperature((true_logits * temperature).float(), labels)
    assert fitted == pytest.approx(temperature, rel=0.01)


@pytest.mark.parametrize(
    ("seed", "n", "c", "scale"),
    [(1, 500, 10, 3.0), (2, 64, 3, 0.3), (3, 2000, 100, 1.0), (4, 7, 2, 5.0)],
    ids=["overconfident", "underconfident", "100-classes", "7-samples"],
)
def test_fit_temperature_matches_scipy_minimize_scalar(seed, n, c, scale):
    from scipy.optimize import minimize_scalar

    logits, labels = calibrated_logits(seed, n, c)
    logits = logits * scale
    z, y = logits.numpy(), labels.numpy()
    result = minimize_scalar(
        lambda u: reference_nll(z, y, math.exp(u)), bounds=(math.log(0.01), math.log(100.0)),
        method="bounded", options={"xatol": 1e-10},
    )
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(math.exp(result.x), rel=1e-5)
    # The fitted NLL is the minimum: not above scipy's, nor above T = 1 (computed by PyTorch).
    assert reference_nll(z, y, fitted) <= result.fun + 1e-12
    at_one = torch.nn.functional.cross_entropy(logits, labels).item()
    assert reference_nll(z, y, fitted) <= at_one + 1e-12


def test_fit_temperature_is_deterministic_and_leaves_logits_alone():
    logits, labels = calibrated_logits(5, 1000, 10)
    logits = (logits * 2).float()
    before = logits.clone()
    first, second = fit_temperature(logits, labels), fit_temperature(logits, labels)
    assert first == second
    assert torch.equal(logits, before)


def test_fit_temperature_separable_data_warns_at_the_lower_bound():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [5.0, 1.0]])
    with pytest.warns(RuntimeWarning, match=r"still decreasing at the bound T = 0\.01"):
        assert fit_temperature(logits, torch.tensor([0, 1, 0])) == 0.01


def test_fit_temperature_anti_informative_logits_warn_at_the_upper_bound():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    with pytest.warns(RuntimeWarning, match=r"still decreasing at the bound T = 50"):
        assert fit_temperature(logits, torch.tensor([1, 0]), bounds=(0.1, 50.0)) == 50.0


def test_fit_temperature_flat_nll_gives_one():
    logits = torch.full((4, 3), 2.0)
    assert fit_temperature(logits, torch.tensor([0, 1, 2, 0])) == 1.0


def test_fit_temperature_one_sample_matches_scipy():
    from scipy.optimize import minimize_scalar

    # The target is the runner-up: p_y is 0 as T -> 0 and 1/3 as T -> inf, highest in between.
    logits = torch.tensor([[2.0, 1.5, -5.0]], dtype=torch.float64)
    labels = torch.tensor([1])
    result = minimize_scalar(
        lambda u: reference_nll(logits.numpy(), labels.numpy(), math.exp(u)),
        bounds=(math.log(0.01), math.log(100)), method="bounded", options={"xatol": 1e-10},
    )
    assert 1.5 < math.exp(result.x) < 5
    assert fit_temperature(logits, labels) == pytest.approx(math.exp(result.x), rel=1e-5)


@pytest.mark.parametrize(
    ("logits", "targets", "kwargs", "error", "match"),
    [
        (torch.tensor([[1.0, math.nan]]), torch.tensor([0]), {}, ValueError, "logits: expected finite"),
        (torch.tensor([[1.0, math.inf]]), torch.tensor([0]), {}, ValueError, "logits: expected finite"),
        (torch.zeros(0, 3), ZEROS3[:0], {}, ValueError, "logits: expected a tensor of shape"),
        (torch.zeros(3, 1), ZEROS3, {}, ValueError, "C >= 2"),
        (torch.zeros(3), ZEROS3, {}, ValueError, "logits: expected a tensor of shape"),
        (torch.zeros(3, 2, dtype=torch.long), ZEROS3, {}, TypeError, "floating-point"),
        (torch.zeros(3, 2), torch.zeros(3), {}, TypeError, "targets: expected an integer"),
        (torch.zeros(3, 2), torch.tensor([0, 2, 1]), {}, ValueError, r"expected class indices in \[0, 2\)"),
        (torch.zeros(3, 2), ZEROS3[:2], {}, ValueError, "targets: expected class indices of"),
        (torch.zeros(3, 2), ZEROS3, {"bounds": (0.0, 1.0)}, ValueError, "0 < low < high"),
        (torch.zeros(3, 2), ZEROS3, {"bounds": (2.0, 1.0)}, ValueError, "0 < low < high"),
        (torch.zeros(3, 2), ZEROS3, {"bounds": 1.0}, TypeError, "bounds: expected a pair"),
        (torch.zeros(3, 2), ZEROS3, {"bounds": (1, math.inf)}, ValueError, "bounds"),
        ([[1.0, 0.0]], ZEROS3[:1], {}, TypeError, "logits: expected a torch.Tensor"),
    ],
    ids=["nan", "inf", "empty", "one-class", "1d", "integer-logits", "float-targets", "target-out-of-range",
         "length-mismatch", "zero-bound", "reversed-bounds", "scalar-bounds", "infinite-bound",
         "list-logits"],
)
def test_fit_temperature_bad_input(logits, targets, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_temperature(logits, targets, **kwargs)


# --- shared input rules --------------------------------------------------------------------------------

METRICS = {
    "brier_score": brier_score,
    "smooth_ece": smooth_ece,
    "adaptive_ece": adaptive_ece,
    "classwise_ece": classwise_ece,
    "aurc": aurc,
}


@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_refuses_empty_input(metric):
    with pytest.raises(ValueError, match=r"probs: expected at least one sample"):
        METRICS[metric](torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_refuses_rows_that_do_not_sum_to_one(metric):
    probs = torch.tensor([[0.5, 0.5], [0.6, 0.3]])
    with pytest.raises(ValueError, match=r"probs: expected rows that sum to 1 .* got 'row 1 summing to 0\.9"):
        METRICS[metric](probs, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("probs", "targets", "error", "match"),
    [
        (torch.ones(3), torch.zeros(3, dtype=torch.long), ValueError, "probs: expected a tensor of shape"),
        (torch.full((2, 2), 0.5), ZEROS3, ValueError, "targets: expected class indices"),
        (torch.full((2, 2), 0.5), torch.zeros(2), TypeError, "targets: expected an integer"),
        (torch.tensor([[1.5, -0.5]]), torch.zeros(1, dtype=torch.long), ValueError, "probabilities in"),
        (torch.tensor([[math.nan, 0.5]]), torch.zeros(1, dtype=torch.long), ValueError, "probabilities in"),
        (torch.ones(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long), TypeError, "floating-point"),
    ],
    ids=["1d-probs", "length-mismatch", "float-targets", "outside-0-1", "nan", "integer-probs"],
)
@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_bad_input(metric, probs, targets, error, match):
    with pytest.raises(error, match=match):
        METRICS[metric](probs, targets)


@pytest.mark.parametrize("metric", ["adaptive_ece", "classwise_ece"])
@pytest.mark.parametrize(("n_bins", "error"), [(0, ValueError), (2.5, TypeError), (True, TypeError)],
                         ids=["zero", "float", "bool"])
def test_binned_metric_bad_n_bins(metric, n_bins, error):
    with pytest.raises(error, match="n_bins"):
        METRICS[metric](torch.full((2, 2), 0.5), torch.zeros(2, dtype=torch.long), n_bins=n_bins)


@pytest.mark.parametrize(("bandwidth", "error"), [(0.0, ValueError), (1e-4, ValueError), (-1.0, ValueError),
                                                  (math.nan, ValueError), ("0.1", TypeError)],
                         ids=["zero", "below-floor", "negative", "nan", "string"])
def test_smooth_ece_bad_bandwidth(bandwidth, error):
    with pytest.raises(error, match="bandwidth"):
        smooth_ece(torch.full((2, 2), 0.5), torch.zeros(2, dtype=torch.long), bandwidth=bandwidth)


@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_leaves_its_inputs_alone(metric):
    probs, labels = case("10-classes")
    probs, labels = probs.float(), labels
    before, labels_before = probs.clone(), labels.clone()
    METRICS[metric](probs, labels)
    assert torch.equal(probs, before) and torch.equal(labels, labels_before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_accepts_a_16_bit_softmax_of_many_classes(metric, dtype):
    """Rows of a 16-bit softmax miss 1 by their rounding (up to about 2^-9 for bfloat16); that is no error."""
    logits = torch.randn(32, 5000, generator=torch.Generator().manual_seed(9)) * 3
    probs = torch.softmax(logits.to(dtype), dim=1)
    labels = torch.randint(0, 5000, (32,), generator=torch.Generator().manual_seed(10))
    value = METRICS[metric](probs, labels)
    assert math.isfinite(value) and value >= 0


@pytest.mark.parametrize("metric", list(METRICS))
def test_metric_one_class_is_zero(metric):
    assert METRICS[metric](torch.ones(3, 1), ZEROS3) == pytest.approx(0.0, abs=1e-12)

"""Calibration metrics against hand-computed cases and the libraries each binning reproduces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from labelsmooth.functional import cross_entropy
from labelsmooth.metrics import ECE_BINS, expected_calibration_error, reliability_bins


def guo_reference_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """``_ECELoss`` of gpleiss/temperature_scaling (Guo et al.'s code), on probabilities instead of logits."""
    bin_boundaries = torch.linspace(0, 1, n_bins + 1)
    confidences, predictions = torch.max(probs, 1)
    accuracies = predictions.eq(labels)
    ece = torch.zeros(1, dtype=torch.float64)
    for bin_lower, bin_upper in itertools.pairwise(bin_boundaries):
        in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
        prop_in_bin = in_bin.double().mean()
        if prop_in_bin.item() > 0:
            accuracy_in_bin = accuracies[in_bin].double().mean()
            avg_confidence_in_bin = confidences[in_bin].double().mean()
            ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
    return float(ece.item())


def torchmetrics_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    tm = pytest.importorskip("torchmetrics.functional.classification")
    value = tm.multiclass_calibration_error(
        probs, labels, num_classes=probs.shape[1], n_bins=n_bins, norm="l1"
    )
    return float(value.item())


def netcal_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    metrics = pytest.importorskip("netcal.metrics")
    return float(metrics.ECE(bins=n_bins).measure(probs.double().numpy(), labels.numpy()))


REFERENCES = {"guo": guo_reference_ece, "torchmetrics": torchmetrics_ece, "netcal": netcal_ece}


def random_probs(seed: int, n: int, c: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=generator) * temperature
    labels = torch.randint(0, c, (n,), generator=generator)
    return torch.softmax(logits, dim=1), labels


def edge_probs() -> tuple[torch.Tensor, torch.Tensor]:
    """Confidences exactly on bin edges (k/15 as float32), 1.0 and midpoints: where the binnings disagree."""
    edges = torch.linspace(0, 1, 16)
    conf = torch.cat([edges[8:], edges[8:15] + 1 / 30, edges[12:]])
    probs = torch.stack([conf, 1 - conf], dim=1)
    labels = torch.arange(len(conf)) % 3 % 2
    return probs, labels


@pytest.mark.parametrize("binning", ["guo", "torchmetrics", "netcal"])
@pytest.mark.parametrize(
    ("seed", "n", "c", "temperature"),
    [(0, 200, 10, 3.0), (1, 37, 3, 0.5), (2, 500, 100, 8.0), (3, 1, 2, 1.0)],
    ids=["10-classes", "3-classes-flat", "100-classes-peaked", "one-sample"],
)
def test_ece_matches_reference_library(binning, seed, n, c, temperature):
    probs, labels = random_probs(seed, n, c, temperature)
    expected = REFERENCES[binning](probs, labels)
    assert expected_calibration_error(probs, labels, binning=binning) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("binning", ["guo", "torchmetrics", "netcal"])
def test_ece_matches_reference_library_on_bin_edges(binning):
    probs, labels = edge_probs()
    expected = REFERENCES[binning](probs, labels)
    assert expected_calibration_error(probs, labels, binning=binning) == pytest.approx(expected, abs=1e-6)


def test_binnings_disagree_on_edges():
    """Guards that the edge case above can tell the binnings apart at all."""
    probs, labels = edge_probs()
    values = {b: expected_calibration_error(probs, labels, binning=b) for b in REFERENCES}
    assert len({round(x, 9) for x in values.values()}) > 1


def test_ece_hand_computed():
    # Two samples at confidence 0.9 (one right), one at 0.6 (right):
    # |0.5 - 0.9| * 2/3 + |1 - 0.6| * 1/3 = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_ece_perfectly_calibrated_is_zero():
    # Confidence 0.75 and three of four right.
    probs = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_closed_right_vs_left_by_hand():
    # Confidence exactly 0.5 with 2 bins: Guo puts it in (0, 0.5], torchmetrics in [0.5, 1).
    probs = torch.tensor([[0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    guo = reliability_bins(probs, labels, n_bins=2, binning="guo")
    tm = reliability_bins(probs, labels, n_bins=2, binning="torchmetrics")
    assert guo.count.tolist() == [1.0, 1.0]
    assert tm.count.tolist() == [0.0, 2.0, 0.0]
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx((0.5 + 0.8) / 2)
    assert expected_calibration_error(probs, labels, n_bins=2, binning="torchmetrics") == pytest.approx(0.15)


def test_reliability_bins_counts_and_means():
    probs, labels = random_probs(4, 300, 5, 2.0)
    bins = reliability_bins(probs, labels)
    assert bins.count.sum().item() == 300
    assert bins.edges.shape == (16,)
    confidence, prediction = probs.max(1)
    for m in range(15):
        low, high = bins.edges[m].item(), bins.edges[m + 1].item()
        inside = (confidence.double() > low) & (confidence.double() <= high)
        assert bins.count[m].item() == inside.sum().item()
        if inside.any():
            assert bins.confidence[m].item() == pytest.approx(confidence[inside].double().mean().item())
            expected_accuracy = (prediction[inside] == labels[inside]).double().mean().item()
            assert bins.accuracy[m].item() == pytest.approx(expected_accuracy)


@pytest.mark.parametrize("binning", ["guo", "torchmetrics", "netcal"])
def test_confidence_rounded_above_one_counts_as_one(binning):
    probs = torch.tensor([[1.0 + 1e-7, 0.0], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    expected = expected_calibration_error(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), labels, binning=binning)
    assert expected_calibration_error(probs, labels, binning=binning) == pytest.approx(expected)
    assert expected == pytest.approx(0.5)


def test_ece_empty_input_is_zero():
    assert expected_calibration_error(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0


@pytest.mark.parametrize(
    ("probs", "targets", "kwargs", "error", "match"),
    [
        (torch.ones(3), torch.zeros(3, dtype=torch.long), {}, ValueError, "probs: expected a tensor of"),
        (torch.ones(3, 2), torch.zeros(2, dtype=torch.long), {}, ValueError, "targets: expected class"),
        (torch.ones(3, 2), torch.zeros(3), {}, TypeError, "targets: expected an integer"),
        (torch.full((3, 2), 2.0), torch.zeros(3, dtype=torch.long), {}, ValueError, "probs: expected probab"),
        (torch.ones(3, 2) / 2, torch.full((3,), 2), {}, ValueError, "targets: expected class indices in"),
        (torch.ones(3, 2) / 2, torch.zeros(3, dtype=torch.long), {"n_bins": 0}, ValueError, "n_bins"),
        (torch.ones(3, 2) / 2, torch.zeros(3, dtype=torch.long), {"binning": "x"}, ValueError, "binning"),
        ([[0.5, 0.5]], torch.zeros(1, dtype=torch.long), {}, TypeError, "probs: expected a torch.Tensor"),
    ],
    ids=["1d-probs", "length-mismatch", "float-targets", "above-one", "index-out-of-range", "zero-bins",
         "unknown-binning", "list-probs"],
)
def test_ece_bad_input(probs, targets, kwargs, error, match):
    with pytest.raises(error, match=match):
        expected_calibration_error(probs, targets, **kwargs)


def test_every_metric_is_importable_from_the_package():
    import labelsmooth.metrics as metrics

    names = {"BINNINGS", "ReliabilityBins", "adaptive_ece", "aurc", "brier_score", "classwise_ece",
             "expected_calibration_error", "fit_temperature", "reliability_bins", "smooth_ece",
             "ECE_BINS", "TEMPERATURE_BOUNDS", "TokenStatistics", "token_statistics"}
    assert set(metrics.__all__) == names
    assert all(getattr(metrics, name) is not None for name in names)


def test_n_bins_and_binning_are_keyword_only():
    probs, labels = torch.tensor([[0.75, 0.25]]), torch.tensor([0])
    with pytest.raises(TypeError, match="positional"):
        expected_calibration_error(probs, labels, 2)
    with pytest.raises(TypeError, match="positional"):
        reliability_bins(probs, labels, 2, "guo")


def test_the_default_bins_are_ece_bins():
    """15 bins, Guo et al.'s: a confidence of 0.7 and one of 0.71 share a bin of width 1/15."""
    probs, labels = torch.tensor([[0.7, 0.3], [0.71, 0.29]]), torch.tensor([0, 1])
    assert ECE_BINS == 15
    assert reliability_bins(probs, labels).count.tolist() == [0.0] * 10 + [2.0] + [0.0] * 4
    assert expected_calibration_error(probs, labels) == pytest.approx(guo_reference_ece(probs, labels))


@pytest.mark.parametrize(
    ("convention", "alpha", "quoted"),
    [("uniform", 0.1, "1.0148"), ("others", 0.1, "1.0158"), ("others", 0.1 * 999 / 1000, "1.0148")],
    ids=["uniform", "others-same-alpha", "others-converted"],
)
def test_loss_floor_number_used_in_docs(convention, alpha, quoted):
    """The README and `explain` quote the loss floor for alpha 0.1 over 1000 classes, the target's entropy.

    The library's cross-entropy of the smoothed target with itself (logits log q) is compared with
    scipy's entropy of q built here in numpy from the conventions' definitions.
    """
    scipy_stats = pytest.importorskip("scipy.stats")
    c = 1000
    rest = alpha / c if convention == "uniform" else alpha / (c - 1)
    q = np.full(c, rest)
    q[0] = 1 - alpha + alpha / c if convention == "uniform" else 1 - alpha
    expected = scipy_stats.entropy(q)
    logits = torch.from_numpy(np.log(q))[None, :]
    floor = cross_entropy(logits, torch.tensor([0]), alpha=alpha, convention=convention).item()
    assert floor == pytest.approx(expected, abs=1e-12)
    assert f"{floor:.4f}" == quoted

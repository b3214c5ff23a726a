"""Binned calibration errors: the ECE and its reliability bins, adaptive (equal-mass) and class-wise ECE.

Top-label calibration: for each prediction take the confidence
``c_i = max_k p_ik`` and whether the top class was right, ``a_i``. Samples are
put into equal-width confidence bins ``B_m``, and

.. math::
    \\mathrm{ECE} = \\sum_m \\frac{|B_m|}{N} \\,\\Bigl|\\overline{a}_{B_m} - \\overline{c}_{B_m}\\Bigr|

Libraries disagree only on which bin a confidence that sits exactly on an edge
belongs to. ``binning`` picks one of them:

* ``"guo"``: Guo et al.'s reference code (``gpleiss/temperature_scaling``):
  bins ``(e_m, e_{m+1}]``, closed on the right, edges from ``torch.linspace``
  in float32; a confidence of exactly 0 falls in no bin (but counts in ``N``).
* ``"torchmetrics"``: ``MulticlassCalibrationError(norm="l1")``: bins
  ``[e_m, e_{m+1})``, closed on the left, edges in the probabilities' dtype; a
  confidence of exactly 1 gets a bin of its own (so there are ``n_bins + 1``).
* ``"netcal"``: ``netcal.metrics.ECE`` (numpy histogram edges): bins
  ``[e_m, e_{m+1})`` in float64, the last one closed, ``[e_{M-1}, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._reduction import mean_divisor
from labelsmooth.metrics._common import (
    _check_distributions,
    _check_n_bins,
    _check_probs,
    _tie_averaged_cumsum,
    _top_label,
)

__all__ = [
    "BINNINGS", "ECE_BINS", "ReliabilityBins", "adaptive_ece", "adaptive_ece_of", "classwise_ece",
    "expected_calibration_error", "reliability_bins",
]

#: Bins of every binned calibration error unless ``n_bins`` says otherwise: the 15 of Guo et
#: al. and Müller et al., whose numbers a comparison is read against.
ECE_BINS = 15
BINNINGS = ("guo", "torchmetrics", "netcal")


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of top-label confidence.

    ``edges`` has the bin boundaries (``n_bins + 1`` values from 0 to 1);
    ``confidence``, ``accuracy`` and ``count`` have one entry per bin (for
    ``binning="torchmetrics"`` one more, the bin of confidence exactly 1).
    Empty bins have confidence and accuracy 0. ``total`` is ``N``, the number of
    samples, which can exceed ``count.sum()`` under ``"guo"`` (confidence 0).
    """

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    total: int


#: Elements per block of rows in :func:`classwise_ece` (32 MiB of float64).
_BLOCK_ELEMENTS = 1 << 22


def _bin_index(confidence: Tensor, n_bins: int, binning: str) -> tuple[Tensor, Tensor, int]:
    """The edges, each sample's bin (-1 for none) and the number of bins."""
    if binning == "guo":
        # The reference code compares against float32 edges turned into Python floats.
        edges = torch.linspace(0, 1, n_bins + 1).to(torch.float64)
        index = torch.bucketize(confidence.double(), edges, right=False) - 1
        return edges, index, n_bins
    if binning == "torchmetrics":
        edges = torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype, device=confidence.device)
        index = torch.bucketize(confidence, edges, right=True) - 1
        return edges.double().cpu(), index, n_bins + 1
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    c64 = confidence.double().cpu()
    index = torch.bucketize(c64, edges, right=True) - 1
    index = torch.where(c64 == edges[-1], n_bins - 1, index)
    return edges, index, n_bins


def reliability_bins(
    probs: Tensor, targets: Tensor, *, n_bins: int = ECE_BINS, binning: str = "guo"
) -> ReliabilityBins:
    """Mean top-label confidence, accuracy and sample count per confidence bin.

    Args:
        probs: ``(N, C)`` predicted probabilities (rows of a softmax).
        targets: ``(N,)`` class indices in ``[0, C)``.
        n_bins: number of equal-width bins on [0, 1].
        binning: ``"guo"``, ``"torchmetrics"`` or ``"netcal"``; see
            :mod:`labelsmooth.metrics._binned` for the edge rules.

    Returns:
        A :class:`ReliabilityBins` of float64 CPU tensors.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
        >>> bins = reliability_bins(probs, torch.tensor([0, 0]), n_bins=2)
        >>> bins.confidence.tolist(), bins.accuracy.tolist(), bins.count.tolist()
        ([0.0, 0.75], [0.0, 0.5], [0.0, 2.0])
    """
    n_bins = _check_n_bins(n_bins)
    binning = v.check_choice(binning, "binning", BINNINGS)
    confidence, correct = _top_label(probs, targets)
    edges, index, slots = _bin_index(confidence, n_bins, binning)
    index = index.cpu()
    inside = index >= 0
    index = index[inside]
    conf = confidence.detach().cpu().double()[inside]
    acc = correct.cpu().double()[inside]
    count = torch.zeros(slots, dtype=torch.float64).index_add_(0, index, torch.ones_like(conf))
    conf_sum = torch.zeros(slots, dtype=torch.float64).index_add_(0, index, conf)
    acc_sum = torch.zeros(slots, dtype=torch.float64).index_add_(0, index, acc)
    denominator = mean_divisor(count)
    return ReliabilityBins(edges, conf_sum / denominator, acc_sum / denominator, count, int(probs.shape[0]))


def expected_calibration_error(
    probs: Tensor, targets: Tensor, *, n_bins: int = ECE_BINS, binning: str = "guo"
) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins.

    .. math::
        \\mathrm{ECE} = \\sum_m \\frac{|B_m|}{N} \\,|\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|

    Args:
        probs: ``(N, C)`` predicted probabilities.
        targets: ``(N,)`` class indices.
        n_bins: number of equal-width bins (:data:`ECE_BINS`, as Guo et al. and Müller et al.).
        binning: which library's edge rule to reproduce: ``"guo"`` (closed on
            the right), ``"torchmetrics"`` (closed on the left) or ``"netcal"``
            (numpy histogram edges).

    Returns:
        The ECE as a Python float in [0, 1]; 0 for ``N = 0``.

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 1])), 4)
        0.4

    References:
        Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
        Networks", 2017. Naeini, Cooper and Hauskrecht, "Obtaining Well
        Calibrated Probabilities Using Bayesian Binning", 2015.
    """
    bins = reliability_bins(probs, targets, n_bins=n_bins, binning=binning)
    if bins.total == 0:
        return 0.0
    gap = (bins.accuracy - bins.confidence).abs()
    return float((gap * bins.count).sum().item() / bins.total)


def adaptive_ece(probs: Tensor, targets: Tensor, *, n_bins: int = ECE_BINS) -> float:
    """Top-label calibration error with equal-mass bins (adaptive ECE).

    Sort the confidences ``c_i = max_k p_ik`` and cut them into ``M = n_bins``
    consecutive groups ``B_m`` of equal size (the first ``N mod M`` groups hold
    one sample more, as ``torch.tensor_split``). With ``a_i`` = 1 when the top
    class is right,

    .. math::
        \\mathrm{AdaECE} = \\sum_m \\frac{|B_m|}{N} \\,\\Bigl|\\overline{a}_{B_m} - \\overline{c}_{B_m}\\Bigr|
        = \\frac{1}{N} \\sum_m \\Bigl| \\sum_{i \\in B_m} (a_i - c_i) \\Bigr|

    A run of equal confidences that straddles a group boundary is shared: each
    side gets its proportion of the run's right answers, which is the mean over
    all orders of the tied samples (so the value never depends on the order of
    the input). Without ties this is TorchUncertainty's
    ``AdaptiveCalibrationError(norm="l1")``. With ``N < n_bins`` some groups are
    empty and count 0.

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.
        n_bins: number of equal-mass groups ``M`` (:data:`ECE_BINS`, like the ECE).

    Returns:
        The adaptive ECE as a Python float in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
        >>> # groups {0.6, 0.7} (one of two right) and {0.8, 0.9} (both right)
        >>> round(adaptive_ece(probs, torch.tensor([0, 1, 0, 0]), n_bins=2), 6)
        0.15

    References:
        Nixon, Dusenberry, Zhang, Jerfel and Tran, "Measuring Calibration in Deep
        Learning", CVPR Workshops 2019. Mukhoti, Kulharia, Sanyal, Golodetz, Torr
        and Dokania, "Calibrating Deep Neural Networks using Focal Loss", 2020.
    """
    n_bins = _check_n_bins(n_bins)
    confidence, correct = _top_label(probs, targets, distributions=True)
    return adaptive_ece_of(confidence.detach().double().cpu(), correct.cpu().double(), n_bins)


def adaptive_ece_of(confidence: Tensor, correct: Tensor, n_bins: int) -> float:
    """:func:`adaptive_ece` from the top-label confidence and correctness, float64 ``(N,)`` each (what a
    token-level record keeps instead of the probabilities); arguments unchecked."""
    sorted_confidence, order = confidence.sort(stable=True)
    running = _tie_averaged_cumsum(sorted_confidence, correct[order] - sorted_confidence)
    n = sorted_confidence.numel()
    sizes = torch.full((n_bins,), n // n_bins, dtype=torch.long)
    sizes[: n % n_bins] += 1
    bounds = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    return float((running[bounds[1:]] - running[bounds[:-1]]).abs().sum() / n)


def classwise_ece(probs: Tensor, targets: Tensor, *, n_bins: int = ECE_BINS) -> float:
    """Class-wise calibration error: the binned calibration error of every ``p_c``, averaged over classes.

    For each class ``c`` the probabilities ``p_ic`` of all samples go into
    ``M = n_bins`` equal-width bins ``B_cm`` on [0, 1], and are compared with the
    frequency of ``y_i = c`` in each bin:

    .. math::
        \\mathrm{cwECE} = \\frac{1}{C} \\sum_{c=1}^{C} \\sum_m \\frac{|B_{cm}|}{N}
        \\,\\Bigl| \\overline{[y = c]}_{B_{cm}} - \\overline{p_c}_{B_{cm}} \\Bigr|

    The bins follow numpy's histogram rule (``binning="netcal"`` of
    :func:`expected_calibration_error`): ``[e_m, e_{m+1})`` in float64, the last
    one closed. Every probability lands in a bin, 0 and 1 included, which
    matters here because most ``p_ic`` of a confident model are near 0.

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.
        n_bins: number of equal-width bins per class.

    Returns:
        The class-wise ECE as a Python float in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.75, 0.25], [0.75, 0.25]], dtype=torch.float64)
        >>> # class 0: p = 0.75 twice, frequency 1/2; class 1: p = 0.25 twice, frequency 1/2
        >>> round(classwise_ece(probs, torch.tensor([0, 1]), n_bins=4), 6)
        0.25

    References:
        Kull, Perello-Nieto, Kängsepp, Silva Filho, Song and Flach, "Beyond
        temperature scaling: Obtaining well-calibrated multiclass probabilities
        with Dirichlet calibration", NeurIPS 2019 (classwise-ECE). Nixon et al.,
        "Measuring Calibration in Deep Learning", 2019 (static calibration error).
    """
    n_bins = _check_n_bins(n_bins)
    probs, targets = _check_probs(probs, targets)
    _check_distributions(probs)
    n, c = probs.shape
    # One slot per (class, bin); the bin's weighted gap is the absolute sum of its residuals
    # (targets' ones minus probabilities). Blocks of rows keep the int64 slots of an ImageNet-size
    # split (50,000 x 1,000) from costing several N x C buffers at once.
    residual = torch.zeros(c * n_bins, dtype=torch.float64)
    offset = torch.arange(c) * n_bins
    rows = max(1, _BLOCK_ELEMENTS // c)
    for start in range(0, n, rows):
        p = probs[start:start + rows].detach().double().cpu()
        _, index, _ = _bin_index(p, n_bins, "netcal")
        slot = index.add_(offset)
        residual.index_add_(0, slot.flatten(), p.flatten(), alpha=-1)
        hits = slot.gather(1, targets[start:start + rows].cpu()[:, None]).flatten()
        residual.index_add_(0, hits, torch.ones(len(hits), dtype=torch.float64))
    return float(residual.abs().sum() / (n * c))



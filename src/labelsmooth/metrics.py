"""Calibration metrics, temperature scaling and the template-plane projection of Müller et al.

Every metric is a function of ``(probs, targets)``: ``probs (N, C)`` rows of a
softmax and ``targets (N,)`` class indices; it returns a Python float computed
in float64 and never writes to its inputs.

* :func:`expected_calibration_error` and :func:`reliability_bins`: equal-width
  top-label bins, with the edge rule of the library you compare against;
* :func:`adaptive_ece`: equal-mass top-label bins;
* :func:`classwise_ece`: equal-width bins of every class's probability;
* :func:`smooth_ece`: Błasiok and Nakkiran's kernel-smoothed ECE;
* :func:`brier_score` and :func:`aurc` (area under the risk-coverage curve);
* :func:`fit_temperature`: the NLL-optimal temperature of Guo et al. for logits.

The metrics added with temperature scaling (all but the ECE and its bins)
refuse ``N = 0`` (an empty mean has no value) and rows that do not sum to 1
within ``max(1e-3, 2 eps)`` of their dtype, so that a tensor of logits or of
independent sigmoids is not scored as a distribution. The ECE keeps its older
contract: 0 for ``N = 0``, row sums unchecked.

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

Only torch is used, so this module is part of the core package.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth._reduction import mean_divisor
from labelsmooth._token_statistics import TokenStatistics, token_statistics

__all__ = [
    "BINNINGS",
    "ReliabilityBins",
    "TokenStatistics",
    "adaptive_ece",
    "aurc",
    "brier_score",
    "classwise_ece",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "smooth_ece",
    "template_plane_projection",
    "token_statistics",
]

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


def _check_targets(targets: object, num_samples: int, num_classes: int) -> Tensor:
    """Check integer ``targets (N,)`` with values in ``[0, C)``."""
    targets = v.check_tensor(targets, "targets")
    if targets.shape != (num_samples,):
        raise v.fail("targets", f"class indices of shape ({num_samples},)", tuple(targets.shape))
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise v.fail("targets", "an integer tensor of class indices", targets.dtype, error=TypeError)
    v.check_index_values(targets, num_classes, None)
    return targets


def _check_probs(probs: object, targets: object) -> tuple[Tensor, Tensor]:
    """Check ``probs (N, C)`` with entries in [0, 1] and ``targets (N,)``."""
    probs = v.check_tensor(probs, "probs")
    if probs.dim() != 2 or probs.shape[1] < 1:
        raise v.fail("probs", "a tensor of shape (N, C)", tuple(probs.shape))
    if not probs.is_floating_point():
        raise v.fail("probs", "a floating-point tensor", probs.dtype, error=TypeError)
    targets = _check_targets(targets, probs.shape[0], probs.shape[1])
    # A little slack above 1: exp(log_softmax) can round to 1 + 1e-7.
    if not bool(torch.isfinite(probs).all()) or bool(((probs < 0) | (probs > 1 + 1e-6)).any()):
        raise v.fail("probs", "probabilities in [0, 1]", "values outside [0, 1] or not finite")
    return probs, targets


def _check_distributions(probs: Tensor) -> None:
    """At least one row, and every row sums to 1 up to the rounding of its dtype."""
    if probs.shape[0] == 0:
        raise v.fail("probs", "at least one sample, shape (N, C) with N >= 1", tuple(probs.shape))
    # A 16-bit softmax row can miss 1 by a few units in its last place (bfloat16: 2^-8 each).
    atol = max(v.PROBABILITY_ATOL, 2 * torch.finfo(probs.dtype).eps)
    error = (probs.detach().double().sum(dim=1) - 1.0).abs()
    worst = int(error.argmax())
    if float(error[worst]) > atol:
        total = float(probs[worst].double().sum())
        raise v.fail("probs", f"rows that sum to 1 (within {atol:g})", f"row {worst} summing to {total:.6g}")


def _top_label(probs: Tensor, targets: Tensor, *, distributions: bool = False) -> tuple[Tensor, Tensor]:
    """Check ``probs (N, C)`` and ``targets (N,)``; return ``(confidence, correct)``.

    With ``distributions``, also require ``N >= 1`` and rows that sum to 1.
    """
    probs, targets = _check_probs(probs, targets)
    if distributions:
        _check_distributions(probs)
    confidence, prediction = probs.max(dim=1)
    return confidence.clamp(max=1.0), (prediction == targets.to(prediction.device))


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
    probs: Tensor, targets: Tensor, *, n_bins: int = 15, binning: str = "guo"
) -> ReliabilityBins:
    """Mean top-label confidence, accuracy and sample count per confidence bin.

    Args:
        probs: ``(N, C)`` predicted probabilities (rows of a softmax).
        targets: ``(N,)`` class indices in ``[0, C)``.
        n_bins: number of equal-width bins on [0, 1].
        binning: ``"guo"``, ``"torchmetrics"`` or ``"netcal"``; see the module
            docstring for the edge rules.

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
    probs: Tensor, targets: Tensor, n_bins: int = 15, binning: str = "guo"
) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins.

    .. math::
        \\mathrm{ECE} = \\sum_m \\frac{|B_m|}{N} \\,|\\mathrm{acc}(B_m) - \\mathrm{conf}(B_m)|

    Args:
        probs: ``(N, C)`` predicted probabilities.
        targets: ``(N,)`` class indices.
        n_bins: number of equal-width bins (15 in Guo et al. and Müller et al.).
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


def brier_score(probs: Tensor, targets: Tensor) -> float:
    """Multiclass Brier score: the mean squared distance to the one-hot target.

    .. math::
        \\mathrm{BS} = \\frac{1}{N} \\sum_{i=1}^{N} \\sum_{c=1}^{C} (p_{ic} - [y_i = c])^2

    It lies in [0, 2]: 0 for a confident right answer on every sample, 2 for a
    confident wrong one. This is scikit-learn's ``brier_score_loss`` with
    ``scale_by_half=False`` on multiclass input; binary papers that report
    half of it (one term per sample) use the other scale.

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.

    Returns:
        The Brier score as a Python float, computed in float64.

    Raises:
        ValueError: for ``N = 0``, entries outside [0, 1] or rows that do not sum
            to 1 (within ``max(1e-3, 2 * eps)`` of the dtype).

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
        >>> round(brier_score(probs, torch.tensor([0, 0])), 6)  # (0.02 + 1.28) / 2
        0.65

    References:
        Brier, "Verification of Forecasts Expressed in Terms of Probability",
        Monthly Weather Review, 1950.
    """
    probs, targets = _check_probs(probs, targets)
    _check_distributions(probs)
    # A float64 copy: the caller's tensor is never written to.
    residual = probs.detach().to(torch.float64, copy=True)
    rows = torch.arange(residual.shape[0], device=residual.device)
    residual[rows, targets.to(residual.device)] -= 1.0
    return float(residual.square().sum(dim=1).mean())


def _tie_averaged_cumsum(keys: Tensor, values: Tensor) -> Tensor:
    """Running sums of ``values`` along sorted ``keys``, averaged over the orders of tied keys.

    Returns ``S`` of shape ``(N + 1,)`` with ``S[k]`` the expected sum of the
    first ``k`` values when every run of equal keys is put in a uniformly
    random order: inside a run the sum rises linearly from its value before the
    run to its value after it. ``keys`` must be sorted (either direction).
    """
    _, counts = torch.unique_consecutive(keys, return_counts=True)
    total = torch.cat([values.new_zeros(1), values.cumsum(0)])
    ends = counts.cumsum(0)
    starts = ends - counts
    run = torch.repeat_interleave(torch.arange(counts.numel(), device=keys.device), counts)
    position = torch.arange(1, keys.numel() + 1, device=keys.device) - starts[run]
    before = total[starts[run]]
    rise = (total[ends[run]] - before) * position / counts[run]
    return torch.cat([values.new_zeros(1), before + rise])


def adaptive_ece(probs: Tensor, targets: Tensor, *, n_bins: int = 15) -> float:
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
        n_bins: number of equal-mass groups ``M`` (15, like the ECE).

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
    sorted_confidence, order = confidence.detach().double().cpu().sort(stable=True)
    residual = correct.cpu().double()[order] - sorted_confidence
    running = _tie_averaged_cumsum(sorted_confidence, residual)
    n = sorted_confidence.numel()
    sizes = torch.full((n_bins,), n // n_bins, dtype=torch.long)
    sizes[: n % n_bins] += 1
    bounds = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    return float((running[bounds[1:]] - running[bounds[:-1]]).abs().sum() / n)


def classwise_ece(probs: Tensor, targets: Tensor, *, n_bins: int = 15) -> float:
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
    p = probs.detach().double().cpu().flatten()
    hit = torch.zeros(n * c, dtype=torch.float64)
    hit[torch.arange(n) * c + targets.cpu()] = 1.0
    _, index, _ = _bin_index(p, n_bins, "netcal")
    # One slot per (class, bin); the bin's weighted gap is the absolute sum of its residuals.
    slot = (torch.arange(n * c) % c) * n_bins + index
    residual = torch.zeros(c * n_bins, dtype=torch.float64).index_add_(0, slot, hit - p)
    return float(residual.abs().sum() / (n * c))


def aurc(probs: Tensor, targets: Tensor) -> float:
    """Area under the risk-coverage curve, ranking the samples by top-label confidence.

    Keep the ``k`` most confident samples (coverage ``k / N``); the risk
    ``R_k`` is their error rate. AURC is the mean height of the curve over the
    coverages it is defined at, ``[1/N, 1]``, by the trapezoid rule:

    .. math::
        \\mathrm{AURC} = \\frac{1}{N - 1} \\sum_{k=1}^{N-1} \\frac{R_k + R_{k+1}}{2},
        \\qquad R_k = \\frac{1}{k} \\sum_{j \\le k} [\\hat{y}_{(j)} \\ne y_{(j)}]

    This is TorchUncertainty's ``AURC`` (its area divided by ``1 - 1/N``). For
    ``N = 1`` the curve is one point and AURC is its risk. Samples with equal
    confidence cannot be ranked, so the errors of a tied run are spread evenly
    over its positions: the value is the mean over all orders of the ties. Lower
    is better; a ranking that puts every error last reaches the minimum for its
    accuracy, and the value does not depend on the confidences' scale.

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.

    Returns:
        The AURC as a Python float in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
        >>> # right, wrong, right by confidence: R = (0, 1/2, 1/3)
        >>> round(aurc(probs, torch.tensor([0, 1, 0])), 6)  # (1/4 + 5/12) / 2
        0.333333

    References:
        Geifman and El-Yaniv, "Selective Classification for Deep Neural
        Networks", NeurIPS 2017. Geifman, Uziel and El-Yaniv, "Bias-Reduced
        Uncertainty Estimation for Deep Neural Classifiers", ICLR 2019. Xia et
        al., "Towards Understanding Why Label Smoothing Degrades Selective
        Classification and How to Fix It", ICLR 2025 (label smoothing worsens it).
    """
    confidence, correct = _top_label(probs, targets, distributions=True)
    sorted_confidence, order = confidence.detach().double().cpu().sort(descending=True, stable=True)
    errors = 1.0 - correct.cpu().double()[order]
    n = errors.numel()
    risk = _tie_averaged_cumsum(sorted_confidence, errors)[1:] / torch.arange(1, n + 1)
    if n == 1:
        return float(risk[0])
    return float((risk[:-1] + risk[1:]).sum() / (2 * (n - 1)))


#: Nodes of the grid that :func:`smooth_ece` bins the residuals onto, and its smallest bandwidth.
#: With ``h = 2^-14`` the binning changes smECE by about ``(h / sigma)^2 / 8`` relative: 5e-4 at
#: ``sigma = 1e-3`` (the floor relplot uses too), 5e-6 at 1e-2.
_SMOOTH_GRID = 2**14
_MIN_BANDWIDTH = 1e-3


def _residual_spectrum(confidence: Tensor, residual: Tensor) -> Tensor:
    """Cosine coefficients ``C_m = (1/N) sum_i r_i cos(pi m x_i)``, m < G, after linear binning.

    The residuals go to the two nearest midpoints ``(g + 1/2) / G`` of a grid of
    ``G`` nodes; a neighbour beyond 0 or 1 is the mirror image of the edge node,
    so its share stays there (the kernel reflects at both ends).
    """
    size = _SMOOTH_GRID
    position = confidence * size - 0.5
    left = position.floor()
    weight = position - left
    left_index = left.long()
    mass = torch.zeros(size, dtype=torch.float64)
    mass.index_add_(0, left_index.clamp(0, size - 1), residual * (1 - weight))
    mass.index_add_(0, (left_index + 1).clamp(0, size - 1), residual * weight)
    # DCT-II of the binned masses through a zero-padded FFT of length 2G.
    modes = torch.arange(size, dtype=torch.float64)
    spectrum = torch.fft.fft(mass, n=2 * size)[:size] * torch.exp(-0.5j * math.pi * modes / size)
    return torch.real(spectrum) / confidence.numel()


def _phased(spectrum: Tensor) -> Tensor:
    """``eps_m C_m exp(i pi m / 2G)`` (``eps_0 = 1``, else 2): the DCT-III input up to the damping."""
    size = spectrum.numel()
    modes = torch.arange(size, dtype=torch.float64)
    weights = torch.full((size,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    return spectrum * weights * torch.exp(0.5j * math.pi * modes / size)


def _smooth_ece_at(phased: Tensor, bandwidth: float) -> float:
    """``int_0^1 |s(t)| dt`` for the residual smoothed by the reflected Gaussian of ``bandwidth``.

    On [0, 1] with reflections at both ends the Gaussian is the Neumann heat
    kernel, ``K(t, x) = 1 + 2 sum_m exp(-(pi m sigma)^2 / 2) cos(pi m t) cos(pi m x)``,
    so smoothing damps each cosine coefficient. ``s`` is evaluated at the grid's
    midpoints by a DCT-III (FFT of length 2G) and integrated by the midpoint rule.
    """
    size = phased.numel()
    # Modes damped below exp(-40) are left at 0 (exp of a large negative number is also slow).
    kept = min(size, math.ceil(math.sqrt(80.0) / (math.pi * bandwidth)))
    modes = torch.arange(kept, dtype=torch.float64)
    padded = torch.zeros(2 * size, dtype=torch.complex128)
    padded[:kept] = phased[:kept] * torch.exp(-0.5 * (math.pi * modes * bandwidth) ** 2)
    smoothed = torch.fft.ifft(padded).real[:size] * (2 * size)
    return float(smoothed.abs().mean())


def _smooth_ece_fixpoint(phased: Tensor) -> float:
    """smECE at the bandwidth ``sigma*`` with ``smECE_sigma* = sigma*``, by bisection on [1e-3, 1].

    ``smECE_sigma`` does not increase with ``sigma``, so ``smECE_sigma - sigma``
    changes sign once. A fixpoint below the floor is reported at the floor.
    """
    low, high = _MIN_BANDWIDTH, 1.0
    if _smooth_ece_at(phased, high) >= high:
        return _smooth_ece_at(phased, high)
    if _smooth_ece_at(phased, low) <= low:
        return _smooth_ece_at(phased, low)
    while high - low > 1e-7:
        middle = 0.5 * (low + high)
        if _smooth_ece_at(phased, middle) > middle:
            low = middle
        else:
            high = middle
    return _smooth_ece_at(phased, high)


def smooth_ece(probs: Tensor, targets: Tensor, *, bandwidth: float | None = None) -> float:
    """Smooth ECE (Błasiok and Nakkiran): the top-label residuals smoothed by a reflected Gaussian.

    With confidences ``c_i = max_k p_ik``, correctness ``a_i`` and the Gaussian
    kernel ``K_sigma`` reflected at 0 and 1 (the sum of ``phi_sigma`` over all
    mirror images of ``x`` in the lines 0 and 1), the smoothed residual and its
    calibration error are

    .. math::
        s_\\sigma(t) = \\frac{1}{N} \\sum_{i=1}^{N} K_\\sigma(t, c_i)\\,(a_i - c_i), \\qquad
        \\mathrm{smECE}_\\sigma = \\int_0^1 |s_\\sigma(t)| \\,dt

    ``smECE_sigma`` does not increase with ``sigma``; the Smooth ECE is its
    value at the unique fixpoint ``smECE_sigma* = sigma*``, found by bisection
    to 1e-7 in ``sigma``. Because of the fixpoint the result is also the
    bandwidth. A fixpoint below 0.001 is reported at ``sigma = 0.001`` (relplot's
    floor too), so values under 0.001 mean "calibrated to that resolution".

    Computed in float64 by binning the residuals onto 2^14 nodes and smoothing
    in the cosine basis, where the reflected kernel is diagonal (``O(N)`` plus
    one FFT per bandwidth). relplot approximates the same kernel (coarser grid,
    one mirror image per side, the Gaussian cut at distance 0.5, a search that
    stops at 2^-10): it agrees to about 1e-3 from a few dozen samples on (up to
    3e-3 on 2 to 10 samples, whose bandwidth is large), except that it gives
    confidences within 0.001 of 0 or 1 half their weight (its reflection misses
    the image of a point on the edge node).

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.
        bandwidth: ``None`` for the fixpoint, or a fixed ``sigma >= 0.001`` for
            ``smECE_sigma`` (relplot's ``smECE_sigma``).

    Returns:
        The Smooth ECE as a Python float in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.75, 0.25]], dtype=torch.float64)
        >>> # one wrong sample: |s| integrates to its residual 0.75 at every bandwidth
        >>> round(smooth_ece(probs, torch.tensor([1])), 6)
        0.75
        >>> probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
        >>> targets = torch.tensor([0] * 7 + [1] * 3)  # 70% right at confidence 0.7
        >>> smooth_ece(probs, targets) < 1e-6
        True

    References:
        Błasiok and Nakkiran, "Smooth ECE: Principled Reliability Diagrams via
        Kernel Smoothing", ICLR 2024 (the ``relplot`` package).
    """
    if bandwidth is not None:
        bandwidth = v.check_nonnegative(bandwidth, "bandwidth")
        if bandwidth < _MIN_BANDWIDTH:
            raise v.fail("bandwidth", f"None or a real number >= {_MIN_BANDWIDTH:g}", bandwidth)
    confidence, correct = _top_label(probs, targets, distributions=True)
    confidence = confidence.detach().double().cpu()
    phased = _phased(_residual_spectrum(confidence, correct.cpu().double() - confidence))
    if bandwidth is None:
        return _smooth_ece_fixpoint(phased)
    return _smooth_ece_at(phased, bandwidth)


def _check_n_bins(n_bins: object) -> int:
    number = v.check_int(n_bins, "n_bins")
    if number < 1:
        raise v.fail("n_bins", "an int >= 1", number)
    return number


def _check_bounds(bounds: object) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite temperatures with ``0 < low < high``."""
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise v.fail("bounds", "a pair (low, high) of temperatures", bounds, error=TypeError)
    low = v.check_nonnegative(bounds[0], "bounds")
    high = v.check_nonnegative(bounds[1], "bounds")
    if not 0.0 < low < high:
        raise v.fail("bounds", "temperatures with 0 < low < high", tuple(bounds))
    return low, high


def _check_logits_targets(logits: object, targets: object) -> tuple[Tensor, Tensor]:
    """Finite floating-point ``logits (N, C)`` with ``N >= 1``, ``C >= 2``, and their ``targets (N,)``."""
    logits = v.check_tensor(logits, "logits")
    if not logits.is_floating_point():
        raise v.fail("logits", "a floating-point tensor", logits.dtype, error=TypeError)
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise v.fail("logits", "a tensor of shape (N, C) with N >= 1 and C >= 2", tuple(logits.shape))
    targets = _check_targets(targets, logits.shape[0], logits.shape[1])
    if not bool(torch.isfinite(logits).all()):
        raise v.fail("logits", "finite values", "a tensor with NaN or infinite entries")
    return logits, targets


def _nll_derivatives(shifted: Tensor, target_logit: Tensor, beta: float) -> tuple[float, float]:
    """First and second derivative in ``beta = 1/T`` of the mean NLL of ``softmax(beta * z)``.

    ``d/dbeta = mean_i (E_p[z_i] - z_iy)`` and ``d2/dbeta2 = mean_i Var_p[z_i]``
    (the NLL is convex in ``beta``). Rows go in chunks of about 2^22 entries.
    """
    n, c = shifted.shape
    rows = max(1, 2**22 // c)
    first = second = 0.0
    for start in range(0, n, rows):
        z = shifted[start : start + rows]
        p = torch.softmax(beta * z, dim=1)
        mean = (p * z).sum(dim=1)
        first += float((mean - target_logit[start : start + rows]).sum())
        second += float((p * (z - mean[:, None]).square()).sum())
    return first / n, second / n


def fit_temperature(logits: Tensor, targets: Tensor, *, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """The temperature that minimizes the NLL of ``softmax(logits / T)`` (temperature scaling).

    .. math::
        T^\\star = \\arg\\min_{T \\in [T_{lo}, T_{hi}]} -\\frac{1}{N} \\sum_{i=1}^{N}
        \\log \\operatorname{softmax}(z_i / T)_{y_i}

    Guo et al. fit ``log T`` (so that ``T > 0``) on a held-out split. The NLL is
    convex in ``beta = 1/T``, so the minimizer is unique and is the root of
    ``dNLL/dbeta``: Newton steps in ``beta`` inside a bracket that shrinks every
    step (bisection in ``log beta`` when a step leaves it), in float64, to a
    relative 1e-10. The result depends only on the inputs (no random start, no
    learning rate), and nothing is written to ``logits``.

    If the NLL still falls at a bound (a split the logits separate perfectly
    falls towards ``T -> 0``; logits no better than chance rise towards
    ``T -> inf``) that bound is returned with a ``RuntimeWarning``. Rows whose
    logits are all equal have NLL ``log C`` at every ``T``; if every row is like
    that the NLL is flat and 1.0 is returned.

    Args:
        logits: ``(N, C)`` finite logits, ``N >= 1``, ``C >= 2``.
        targets: ``(N,)`` class indices in ``[0, C)``.
        bounds: the interval ``(T_lo, T_hi)`` to search, ``0 < T_lo < T_hi``.

    Returns:
        ``T*`` as a Python float; divide the logits by it before the softmax.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> # two of three right with margin 2: the NLL is lowest where softmax(2 / T) = 2/3
        >>> round(fit_temperature(logits, torch.tensor([0, 1, 1])), 4)  # 2 / log 2
        2.8854

    References:
        Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
        Networks", ICML 2017. Müller, Kornblith and Hinton, "When Does Label
        Smoothing Help?", NeurIPS 2019 (temperature scaling as the baseline).
    """
    low, high = _check_bounds(bounds)
    logits, targets = _check_logits_targets(logits, targets)
    z = logits.detach().double()
    # Shifting each row by its maximum leaves the NLL unchanged and keeps beta * z <= 0.
    z = z - z.amax(dim=1, keepdim=True)
    if not bool((z.amin(dim=1) < 0).any()):
        return 1.0
    z_y = z.gather(1, targets.to(z.device).view(-1, 1)).squeeze(1)
    beta_low, beta_high = 1.0 / high, 1.0 / low
    if _nll_derivatives(z, z_y, beta_low)[0] >= 0:
        return _at_bound(high)
    if _nll_derivatives(z, z_y, beta_high)[0] <= 0:
        return _at_bound(low)
    return 1.0 / _slope_root(z, z_y, beta_low, beta_high)


def _slope_root(shifted: Tensor, target_logit: Tensor, beta_low: float, beta_high: float) -> float:
    """The ``beta`` in ``(beta_low, beta_high)`` where the NLL's slope changes sign from - to +.

    Newton steps from ``beta = 1``; a step that leaves the bracket is replaced
    by the bracket's geometric mean, and every evaluation shrinks the bracket.
    """
    beta = min(max(1.0, beta_low), beta_high)
    for _ in range(200):
        slope, curvature = _nll_derivatives(shifted, target_logit, beta)
        if slope == 0.0:
            break
        if slope < 0:
            beta_low = beta
        else:
            beta_high = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if not beta_low < step < beta_high:
            step = math.sqrt(beta_low * beta_high)
        # The slope is a mean of N terms, exact to about 1e-16 * N relative: 1e-10 is as far as it resolves.
        converged = abs(step - beta) <= 1e-10 * beta or beta_high - beta_low <= 1e-10 * beta
        beta = step
        if converged:
            break
    return beta


def _at_bound(temperature: float) -> float:
    """Return a bound of the temperature search, with a warning that the NLL had not turned."""
    warnings.warn(
        f"fit_temperature: the NLL is still decreasing at the bound T = {temperature:g}, so its minimum "
        "lies beyond it; returning the bound (widen `bounds`, or check the logits and targets)",
        RuntimeWarning,
        stacklevel=3,
    )
    return temperature


def template_plane_projection(
    features: Tensor, class_weights: Tensor, classes: tuple[int, int, int]
) -> Tensor:
    """Coordinates of ``features`` in the plane through three classes' templates.

    Müller et al. pick three classes ``k1, k2, k3`` and their last-layer weight
    vectors (templates) ``w1, w2, w3``. The plane through the three points has
    the orthonormal basis ``(b1, b2)`` obtained by Gram-Schmidt on
    ``(w2 - w1, w3 - w1)``; a penultimate activation ``x`` maps to
    ``((x - w1) . b1, (x - w1) . b2)``.

    Args:
        features: ``(N, D)`` penultimate-layer activations.
        class_weights: ``(C, D)`` last-layer weights (``nn.Linear.weight``).
        classes: three distinct class indices in ``[0, C)``.

    Returns:
        ``(N, 2)`` coordinates in the features' dtype (float32 for 16-bit).

    Example:
        >>> import torch
        >>> w = torch.eye(3)
        >>> template_plane_projection(w, w, (0, 1, 2)).abs().max() < 2
        tensor(True)

    References:
        Müller, Kornblith and Hinton, "When Does Label Smoothing Help?", 2019.
    """
    features = v.check_tensor(features, "features")
    class_weights = v.check_tensor(class_weights, "class_weights")
    if features.dim() != 2 or not features.is_floating_point():
        raise v.fail("features", "a floating-point tensor of shape (N, D)", tuple(features.shape))
    if class_weights.dim() != 2 or class_weights.shape[1] != features.shape[1]:
        raise v.fail(
            "class_weights", f"a tensor of shape (C, {features.shape[1]})", tuple(class_weights.shape)
        )
    if not isinstance(classes, (tuple, list)) or len(classes) != 3:
        raise v.fail("classes", "three class indices", classes)
    picked = [v.check_int(k, "classes") for k in classes]
    num_classes = class_weights.shape[0]
    if len(set(picked)) != 3 or not all(0 <= k < num_classes for k in picked):
        raise v.fail("classes", f"three distinct class indices in [0, {num_classes})", tuple(classes))
    dtype = torch.float64
    templates = class_weights.detach().to(dtype)[picked]
    first = templates[1] - templates[0]
    second = templates[2] - templates[0]
    b1 = first / first.norm()
    residual = second - (second @ b1) * b1
    if float(first.norm()) == 0.0 or float(residual.norm()) <= 1e-12 * float(second.norm() + 1):
        raise v.fail("class_weights", "three templates that span a plane (not collinear)", tuple(classes))
    b2 = residual / residual.norm()
    basis = torch.stack([b1, b2], dim=1)
    out = (features.detach().to(dtype) - templates[0]) @ basis
    return out.to(compute_dtype(features.dtype))

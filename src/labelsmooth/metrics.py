"""Calibration metrics and the template-plane projection of Müller et al.

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

from dataclasses import dataclass

import torch
from torch import Tensor

from labelsmooth import _validation as v

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


def _top_label(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``probs (N, C)`` and ``targets (N,)``; return ``(confidence, correct)``."""
    probs = v.check_tensor(probs, "probs")
    targets = v.check_tensor(targets, "targets")
    if probs.dim() != 2 or probs.shape[1] < 1:
        raise v.fail("probs", "a tensor of shape (N, C)", tuple(probs.shape))
    if not probs.is_floating_point():
        raise v.fail("probs", "a floating-point tensor", probs.dtype, error=TypeError)
    if targets.shape != probs.shape[:1]:
        raise v.fail("targets", f"class indices of shape ({probs.shape[0]},)", tuple(targets.shape))
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise v.fail("targets", "an integer tensor of class indices", targets.dtype, error=TypeError)
    v.check_index_values(targets, probs.shape[1], None)
    # A little slack above 1: exp(log_softmax) can round to 1 + 1e-7.
    if not bool(torch.isfinite(probs).all()) or bool(((probs < 0) | (probs > 1 + 1e-6)).any()):
        raise v.fail("probs", "probabilities in [0, 1]", "values outside [0, 1] or not finite")
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
    n_bins = v.check_int(n_bins, "n_bins")
    if n_bins < 1:
        raise v.fail("n_bins", "an int >= 1", n_bins)
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
    denominator = count.clamp(min=1.0)
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
    result_dtype = torch.float32 if features.dtype in (torch.float16, torch.bfloat16) else features.dtype
    return out.to(result_dtype)

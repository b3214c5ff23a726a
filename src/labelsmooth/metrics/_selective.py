"""Selective classification: how well the confidence ranks right answers above wrong ones (AURC)."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth.metrics._common import _tie_averaged_cumsum, _top_label

__all__ = ["aurc", "aurc_of"]


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
    return aurc_of(confidence.detach().double().cpu(), correct.cpu().double())


def aurc_of(confidence: Tensor, correct: Tensor) -> float:
    """:func:`aurc` from the top-label confidence and correctness, float64 ``(N,)`` each (what a
    token-level record keeps instead of the probabilities); arguments unchecked."""
    sorted_confidence, order = confidence.sort(descending=True, stable=True)
    errors = 1.0 - correct[order]
    n = errors.numel()
    risk = _tie_averaged_cumsum(sorted_confidence, errors)[1:] / torch.arange(1, n + 1)
    if n == 1:
        return float(risk[0])
    return float((risk[:-1] + risk[1:]).sum() / (2 * (n - 1)))

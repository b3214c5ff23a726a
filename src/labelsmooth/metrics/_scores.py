"""The Brier score: a proper scoring rule of the whole predicted distribution."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth.metrics._common import _check_distributions, _check_probs

__all__ = ["brier_score"]


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
    return float(residual.square_().sum(dim=1).mean())

"""The divisor of a ``"mean"``, shared by every loss and metric that averages over kept items.

A mean divides a sum by a count of kept items (positions not ignored, or
their summed class weights ``sum_i w_{y_i}``, or the items in a bin). When
nothing is kept the sum is 0, and so is the mean here: the divisor is clamped
to 1 instead of giving ``0 / 0 = NaN``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_divisor"]


def mean_divisor(count: Tensor | float, like: Tensor | None = None) -> Tensor:
    """``count`` where it is positive, else 1; as a tensor of ``like``'s dtype and device if given.

    Dividing by the clamped count keeps an all-ignored batch at loss 0 with
    zero gradients: ``torch.where(count > 0, total / count, 0)`` would still
    send NaN through the unselected branch in backward. Traceable (no host
    read of ``count``).

    Example:
        >>> mean_divisor(torch.tensor([0.0, 2.5]))
        tensor([1.0000, 2.5000])
        >>> mean_divisor(0, torch.ones(()))
        tensor(1.)
    """
    if like is not None or not isinstance(count, Tensor):
        count = torch.as_tensor(count, dtype=None if like is None else like.dtype,
                                device=None if like is None else like.device)
    return torch.where(count > 0, count, torch.ones_like(count))

"""The plain autograd kernel for index targets: a log-softmax, no dense target.

Per row ``i`` with target ``y`` (uniform convention, ``u`` uniform or a prior,
``w`` the class weights, 1 when absent)::

    loss_i = (1 - s) * w_y * (-log p_y) + s * sum_c u_c * w_c * (-log p_c)

which is PyTorch's ``cross_entropy(..., label_smoothing=s)`` before reduction.
Ignored rows are 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth.targets import compute_dtype


def index_cross_entropy_rows(
    logits: Tensor,
    targets: Tensor,
    *,
    smoothing: float,
    prior: Tensor | None,
    weight: Tensor | None,
    ignore_index: int,
) -> Tensor:
    """Per-row smoothed cross-entropy of ``(M, C)`` logits and ``(M,)`` indices."""
    num_classes = logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    log_probs = torch.log_softmax(logits.to(dtype), dim=-1)
    valid = targets != ignore_index
    index = torch.where(valid, targets, 0)
    loss = -log_probs.gather(1, index.unsqueeze(1)).squeeze(1)
    if weight is not None:
        loss = loss * weight.to(dtype)[index]
    if smoothing != 0.0:
        class_mass = (
            torch.full((num_classes,), 1.0 / num_classes, dtype=dtype, device=logits.device)
            if prior is None
            else prior.to(dtype)
        )
        if weight is not None:
            class_mass = class_mass * weight.to(dtype)
        # A matrix-vector product: no (M, C) product tensor besides log_probs.
        loss = (1.0 - smoothing) * loss - smoothing * (log_probs @ class_mass)
    return torch.where(valid, loss, torch.zeros((), dtype=dtype, device=loss.device))

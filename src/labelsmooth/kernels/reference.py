"""The plain autograd kernel for index and mixture targets: a log-softmax, no dense target.

Row ``i`` has ``K`` components: class indices ``y_ik`` with mixing weights
``lam_ik`` (``K = 1``, ``lam = 1`` for plain index targets). With ``s`` the
smoothing mass (uniform convention), ``u`` uniform or a prior and ``w`` the
class weights (1 when absent)::

    loss_i = sum_k lam_ik * [y_ik valid] * ((1 - s) * w_{y_ik} * (-log p_{y_ik})
                                             + s * sum_c u_c * w_c * (-log p_c))

which for ``K = 1`` is PyTorch's ``cross_entropy(..., label_smoothing=s)``
before reduction. A component whose index equals ``ignore_index`` adds 0.
With a softcap ``k``, ``p`` is the softmax of ``k tanh(logits / k)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth._dtypes import compute_dtype
from labelsmooth._smoothing import weighted_distribution

__all__ = ["index_cross_entropy_rows"]


def index_cross_entropy_rows(
    logits: Tensor,
    targets: Tensor,
    target_weights: Tensor | None = None,
    *,
    smoothing: float,
    prior: Tensor | None,
    weight: Tensor | None,
    ignore_index: int,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row smoothed cross-entropy, and the logsumexp of each row's (capped) logits.

    Arguments as :func:`labelsmooth.kernels.index_cross_entropy_rows`, but
    ``logits`` are ``(M, C)`` only (classes last); every operation is plain
    autograd, so ``weight`` and ``prior`` may require grad.

    Returns:
        ``(losses (M,), lse (M,))`` in the compute dtype.
    """
    num_classes = logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    lse = torch.logsumexp(z, dim=-1)
    log_probs = z - lse[:, None]
    index = targets.reshape(targets.shape[0], -1)
    valid = index != ignore_index
    index = torch.where(valid, index, 0)
    mass = valid.to(dtype)
    if target_weights is not None:
        mass = mass * target_weights.reshape(index.shape).to(dtype)
    nll = -log_probs.gather(1, index)
    if weight is not None:
        nll = nll * weight.to(dtype)[index]
    loss = (1.0 - smoothing) * (mass * nll).sum(1)
    if smoothing != 0.0:
        class_mass = weighted_distribution(num_classes, prior, weight, dtype=dtype, device=logits.device)
        # A matrix-vector product: no (M, C) product tensor besides log_probs.
        loss = loss - smoothing * mass.sum(1) * (log_probs @ class_mass)
    return loss, lse

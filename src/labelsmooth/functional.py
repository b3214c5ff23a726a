"""Losses as functions. The modules in :mod:`labelsmooth.losses` call these."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth import kernels
from labelsmooth.soft_targets import SoftTargets, compose_smoothing
from labelsmooth.targets import (
    along_dim,
    check_prior_convention,
    compute_dtype,
    effective_alpha,
    smoothing_distribution,
)

__all__ = ["cross_entropy", "linear_cross_entropy", "soft_cross_entropy"]


def _mean_divisor(count: Tensor) -> Tensor:
    # Dividing by a clamped count keeps an all-ignored batch at loss 0 with zero
    # gradients; ``torch.where(count > 0, total / count, 0)`` would still send
    # NaN through the unselected branch in backward.
    return torch.where(count > 0, count, torch.ones_like(count))


def _safe_mean(total: Tensor, count: Tensor) -> Tensor:
    return total / _mean_divisor(count)


def _reduce(rows: Tensor, row_mass: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return _safe_mean(rows.sum(), row_mass.sum())


def _class_layout(logits: Tensor, dim: int) -> Tensor:
    """Logits as the kernels take them: ``(M, C)`` when the classes are last, else
    ``(B, C, S)`` (a view of contiguous logits: no class-last copy of a segmentation map)."""
    num_classes = logits.shape[dim]
    if dim == logits.dim() - 1:
        return logits.reshape(-1, num_classes)
    return logits.reshape(math.prod(logits.shape[:dim]), num_classes, -1)


def _index_cross_entropy(
    logits: Tensor, targets: Tensor, *, alpha: float, weight: Tensor | None,
    ignore_index: int, reduction: str, prior: Tensor | None, dim: int, inplace_backward: bool = False,
) -> Tensor:
    # The kernel reduces itself (its gradient is then ready after the forward):
    # the mean divides by sum_i w_{y_i} over valid positions.
    divisor: Tensor | float | None = None if reduction == "none" else 1.0
    if reduction == "mean":
        valid = targets != ignore_index
        dtype = compute_dtype(logits.dtype)
        if weight is None:
            row_mass = valid.to(dtype)
        else:
            row_mass = weight.to(dtype)[torch.where(valid, targets, 0)] * valid
        divisor = _mean_divisor(row_mass.sum())
    loss = kernels.index_cross_entropy_rows(
        _class_layout(logits, dim),
        targets.reshape(-1).to(device=logits.device, dtype=torch.long),
        smoothing=alpha, prior=prior, weight=weight, ignore_index=ignore_index,
        inplace_backward=inplace_backward, divisor=divisor,
    )
    return loss.reshape(targets.shape) if divisor is None else loss


def _soft_cross_entropy(
    logits: Tensor, targets: SoftTargets, *, alpha: float, weight: Tensor | None,
    ignore_index: int, reduction: str, prior: Tensor | None, dim: int,
) -> Tensor:
    """Cross-entropy on the dense target of ``targets``, computed from its index maps."""
    num_classes = logits.shape[dim]
    batch_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    if targets.batch_shape != batch_shape:
        expected = f"SoftTargets of batch shape {tuple(batch_shape)}"
        raise v.fail("targets", expected, tuple(targets.batch_shape))
    if ignore_index not in (-100, targets.ignore_index):
        expected = f"the SoftTargets' own ignore_index={targets.ignore_index}"
        raise v.fail("ignore_index", expected, ignore_index)
    if targets.num_classes not in (None, num_classes):
        expected = f"SoftTargets for the logits' {num_classes} classes"
        raise v.fail("targets", expected, f"num_classes={targets.num_classes}")
    v.check_index_values(targets.indices, num_classes, targets.ignore_index)
    smoothing, prior = compose_smoothing(targets.alpha, targets.prior, alpha, prior)
    prior = None if prior is None else prior.to(logits.device)
    if targets.device != logits.device:
        targets = targets.to(logits.device)
    indices, target_weights = targets.rows()
    rows = kernels.index_cross_entropy_rows(
        _class_layout(logits, dim), indices.long(), target_weights,
        smoothing=smoothing, prior=prior, weight=weight, ignore_index=targets.ignore_index,
    )
    if reduction != "mean":
        return _reduce(rows.reshape(batch_shape), rows, reduction)
    # The dense rule: the mean divides by sum_i sum_c w_c q_ic.
    valid = indices != targets.ignore_index
    mass = target_weights.to(rows.dtype) * valid
    if weight is None:
        return _reduce(rows, mass.sum(1), reduction)
    w = weight.to(rows.dtype)
    u = smoothing_distribution(num_classes, prior, dtype=rows.dtype, device=logits.device)
    true_mass = (mass * w[torch.where(valid, indices, 0)]).sum(1)
    return _reduce(rows, (1.0 - smoothing) * true_mass + smoothing * mass.sum(1) * (u @ w), reduction)


def _dense_cross_entropy(
    logits: Tensor, targets: Tensor, *, alpha: float, weight: Tensor | None,
    reduction: str, prior: Tensor | None, dim: int,
) -> Tensor:
    num_classes = logits.shape[dim]
    dtype = compute_dtype(logits.dtype)
    log_probs = torch.log_softmax(logits.to(dtype), dim=dim)
    q = targets.to(dtype)
    row_sum = q.sum(dim, keepdim=True)
    if alpha != 0.0:
        u = smoothing_distribution(num_classes, prior, dtype=dtype, device=logits.device)
        q = (1.0 - alpha) * q + alpha * along_dim(u, q.dim(), dim) * row_sum
    if weight is not None:
        q = q * along_dim(weight.to(dtype), q.dim(), dim)
    rows = -(q * log_probs).sum(dim)
    return _reduce(rows, q.sum(dim), reduction)


def cross_entropy(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    *,
    alpha: float = 0.0,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    prior: Tensor | None = None,
    convention: str = "uniform",
    dim: int = 1,
    inplace_backward: bool = False,
) -> Tensor:
    r"""Cross-entropy against label-smoothed targets, without building them.

    With ``z`` the logits of one position, ``p = softmax(z)``, ``u`` uniform
    (``1/C``) or ``prior``, ``w`` the class ``weight`` (1 when absent) and the
    smoothed target ``q = (1 - alpha) * t + alpha * u``:

    .. math::
        \ell = -\sum_c w_c\, q_c \log p_c

    For index targets ``y`` this is ``(1 - alpha) w_y (-\log p_y) + alpha
    \sum_c u_c w_c (-\log p_c)``, computed from the log-softmax alone: no
    one-hot and no dense target is ever allocated. It equals PyTorch's
    ``F.cross_entropy(logits, y, weight=w, ignore_index=..., label_smoothing=alpha)``
    in loss and gradient, with one deliberate difference: a ``"mean"`` over a
    batch whose every position is ignored is 0 (zero gradients), not NaN.

    ``reduction="mean"`` divides by ``sum_i w_{y_i}`` over positions that are
    not ignored (index targets, PyTorch's rule), or by ``sum_i sum_c w_c q_ic``
    over rows (dense targets: the number of rows when they are normalized and
    unweighted). Dense rows that sum to 0 are thereby ignored; ``ignore_index``
    applies to index targets only.

    :class:`~labelsmooth.SoftTargets` give the loss on their dense target
    (the dense rule above; with ``weight=None`` a plain index map gives the
    index-target result), computed from their index maps without a dense
    tensor. ``alpha`` then smooths them further:
    ``1 - (1 - targets.alpha)(1 - alpha)`` (same prior required). They carry
    their own ``ignore_index``.

    Args:
        logits: ``(N, C)``, ``(C,)`` with ``dim=0``, or ``(N, C, d1, ..., dK)``;
            the class dimension is ``dim`` (``dim=-1`` for ``(B, T, V)``).
        targets: class indices in ``[0, C)`` with the logits' shape without
            ``dim``, probabilities with the logits' shape, or ``SoftTargets``.
        alpha: smoothing mass in [0, 1].
        weight: ``(C,)`` non-negative class weights.
        ignore_index: index target value left out of the loss and the mean.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        prior: ``(C,)`` distribution to smooth towards instead of uniform.
        convention: ``"uniform"`` (``alpha / C`` on every class) or ``"others"``
            (``1 - alpha`` on the true class, ``alpha / (C - 1)`` elsewhere).
        dim: the class dimension.
        inplace_backward: index targets only: the backward writes the gradient
            over the logits' storage instead of allocating an ``(N, C)`` buffer.
            The logits then hold the gradient; only for logits nothing reads
            after the loss (see :func:`labelsmooth.kernels.index_cross_entropy_rows`).

    Returns:
        A scalar, or with ``reduction="none"`` the per-position loss (the
        logits' shape without ``dim``). Float32 for 16-bit logits, the logits'
        dtype otherwise.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(cross_entropy(logits, torch.tensor([0]), alpha=0.1).item(), 4)
        0.3729

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer
        Vision", 2016. Müller, Kornblith and Hinton, "When Does Label Smoothing
        Help?", 2019.
    """
    logits, dim = v.check_logits(logits, dim)
    alpha = v.check_probability(alpha, "alpha")
    reduction = v.check_reduction(reduction)
    convention = v.check_convention(convention)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    num_classes = logits.shape[dim]
    weight = v.check_class_vector(weight, "weight", num_classes, distribution=False)
    prior = v.check_class_vector(prior, "prior", num_classes, distribution=True)
    check_prior_convention(prior, convention)
    alpha = effective_alpha(alpha, num_classes, convention)
    if isinstance(targets, SoftTargets):
        return _soft_cross_entropy(
            logits, targets, alpha=alpha, weight=weight, ignore_index=ignore_index,
            reduction=reduction, prior=prior, dim=dim,
        )
    if v.target_form(logits, targets, dim) == "index":
        v.check_index_values(targets, num_classes, ignore_index)
        return _index_cross_entropy(
            logits, targets, alpha=alpha, weight=weight, ignore_index=ignore_index,
            reduction=reduction, prior=prior, dim=dim, inplace_backward=bool(inplace_backward),
        )
    v.check_dense_values(targets)
    return _dense_cross_entropy(
        logits, targets, alpha=alpha, weight=weight, reduction=reduction, prior=prior, dim=dim,
    )


def soft_cross_entropy(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    dim: int = 1,
) -> Tensor:
    """Cross-entropy with dense or index targets: :func:`cross_entropy` with ``alpha=0``.

    Composer's name, kept so its users can move over. See :func:`cross_entropy`
    for the shapes, the reductions and the handling of ignored positions.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2)
        >>> soft_cross_entropy(logits, torch.tensor([[0.5, 0.5]]))
        tensor(0.6931)
    """
    return cross_entropy(
        logits, targets, weight=weight, ignore_index=ignore_index, reduction=reduction, dim=dim
    )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    alpha: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    r"""An output projection fused with label-smoothed cross-entropy; the logits are never held.

    Equals ``cross_entropy(F.linear(hidden, weight, bias), targets, alpha=alpha,
    dim=-1, ...)`` in loss and in the gradients of ``hidden``, ``weight`` and
    ``bias``, but computes the logits ``z = hidden @ weight.T + bias`` one chunk
    of rows at a time, so no ``(N, V)`` tensor exists in the forward or the
    backward. The smoothing term needs only

    .. math::
        \operatorname{mean}_c z_c = h \cdot \operatorname{mean}_c W_c + \operatorname{mean}(b),

    one extra dot product per row. For ``reduction="mean"`` and ``"sum"`` the
    gradients are computed during the forward and only scaled in the backward;
    ``"none"`` recomputes the logits in the backward.

    Args:
        hidden: ``(..., H)`` hidden states, e.g. ``(B, T, H)``.
        weight: ``(V, H)`` output projection, the hidden states' dtype.
        targets: ``(...)`` class indices in ``[0, V)`` or ``ignore_index``.
        bias: ``(V,)`` or ``None``.
        alpha: smoothing mass in [0, 1] (uniform convention).
        ignore_index: target value left out of the loss and the mean.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; the mean divides by the
            number of targets not ignored.
        chunk_size: rows per chunk; default about 6.3M logits (at least 128 rows).

    Returns:
        A scalar, or with ``reduction="none"`` the ``targets``-shaped loss.
        Float32 for 16-bit inputs.

    Example:
        >>> import torch
        >>> hidden, weight = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> round(linear_cross_entropy(hidden, weight, torch.tensor([0]), alpha=0.1).item(), 4)
        0.3729

    References:
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
        2024. Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training", 2024.
    """
    alpha = v.check_probability(alpha, "alpha")
    reduction = v.check_reduction(reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    chunk_size = v.check_chunk_size(chunk_size)
    v.check_linear_inputs(hidden, weight, bias, targets)
    v.check_index_values(targets, weight.shape[0], ignore_index)
    loss = kernels.fused_linear_cross_entropy(
        hidden.reshape(-1, hidden.shape[-1]), weight,
        targets.reshape(-1).to(device=hidden.device, dtype=torch.long),
        bias=bias, smoothing=alpha, ignore_index=ignore_index, reduction=reduction,
        chunk_size=chunk_size,
    )
    return loss.reshape(targets.shape) if reduction == "none" else loss

"""Losses as functions. The modules in :mod:`labelsmooth.losses` call these."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth import kernels
from labelsmooth._dtypes import compute_dtype
from labelsmooth._reduction import mean_divisor
from labelsmooth._smoothing import along_dim, smoothing_distribution
from labelsmooth.kernels.rowmath import target_mask
from labelsmooth.soft_targets import SoftTargets, compose_smoothing
from labelsmooth.targets import check_prior_convention, effective_alpha
from labelsmooth.tensor_parallel import dtensor_cross_entropy, is_dtensor

__all__ = ["cross_entropy", "linear_cross_entropy", "soft_cross_entropy"]


@dataclass(frozen=True)
class _Options:
    """One call's checked options, shared by the three target forms."""

    alpha: float
    weight: Tensor | None
    ignore_index: int
    reduction: str
    prior: Tensor | None
    dim: int
    #: PaLM's z-loss weight, Gemma 2's logit cap, Hugging Face's global item count.
    z_loss: float = 0.0
    softcap: float | None = None
    num_items: Tensor | int | None = None


#: A loss and its z-loss part (``None`` without a z-loss).
_Pair = tuple[Tensor, "Tensor | None"]


def _num_items(opts: _Options, like: Tensor) -> Tensor | float | None:
    """The item count as a divisor on ``like``'s device and dtype (no host sync)."""
    if isinstance(opts.num_items, Tensor):
        return opts.num_items.to(device=like.device, dtype=like.dtype)
    return None if opts.num_items is None else float(opts.num_items)


def _reduce(rows: Tensor, row_mass: Tensor, z_rows: Tensor | None, z_count: Tensor | None,
            opts: _Options) -> _Pair:
    """Reduce per-position losses (``rows`` includes ``z_rows``, the z-loss part): the mean
    divides the cross-entropy by ``sum row_mass`` and the z-loss by ``z_count``,
    ``num_items_in_batch`` divides both."""
    if opts.reduction == "none":
        return rows, z_rows
    num_items = _num_items(opts, rows)
    if opts.reduction == "sum" or num_items is not None:
        divisor = 1.0 if num_items is None else num_items
        return rows.sum() / divisor, None if z_rows is None else z_rows.sum() / divisor
    if z_rows is None or z_count is None:
        return rows.sum() / mean_divisor(row_mass.sum()), None
    z_part = z_rows.sum() / mean_divisor(z_count)
    return (rows - z_rows).sum() / mean_divisor(row_mass.sum()) + z_part, z_part


def _class_layout(logits: Tensor, dim: int) -> Tensor:
    """Logits as the kernels take them: ``(M, C)`` when the classes are last, else
    ``(B, C, S)`` (a view of contiguous logits: no class-last copy of a segmentation map)."""
    num_classes = logits.shape[dim]
    if dim == logits.dim() - 1:
        return logits.reshape(-1, num_classes)
    return logits.reshape(math.prod(logits.shape[:dim]), num_classes, -1)


def _index_divisors(
    targets: Tensor, opts: _Options, dtype: torch.dtype,
) -> tuple[Tensor | float | None, Tensor | float | None]:
    """The kernel's ``(divisor, z_divisor)`` for index targets: the mean divides the
    cross-entropy by ``sum_i w_{y_i}`` and the z-loss by the count, over positions not ignored
    (PyTorch's rule, Liger-Kernel's rule); ``num_items_in_batch`` replaces both.
    ``z_divisor`` is ``None`` where it equals ``divisor`` (an autograd Function traced by
    ``torch.compile`` may not take one tensor twice)."""
    if opts.reduction == "none":
        return None, None
    num_items = _num_items(opts, targets.new_empty((), dtype=dtype))
    if num_items is not None:
        return num_items, None
    if opts.reduction == "sum":
        return 1.0, None
    valid = targets != opts.ignore_index
    count = mean_divisor(valid.to(dtype).sum())
    if opts.weight is None:
        return count, None
    row_mass = opts.weight.to(dtype)[torch.where(valid, targets, 0)] * valid
    return mean_divisor(row_mass.sum()), count


def _kernel(
    logits: Tensor, targets: Tensor, target_weights: Tensor | None, opts: _Options, *,
    smoothing: float, prior: Tensor | None, ignore_index: int, inplace_backward: bool = False,
    divisor: Tensor | float | None = None, z_divisor: Tensor | float | None = None,
) -> _Pair:
    """The index kernel: ``(loss, z-loss part or None)``."""
    if not opts.z_loss:
        return kernels.index_cross_entropy_rows(
            logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=opts.weight,
            ignore_index=ignore_index, inplace_backward=inplace_backward, divisor=divisor,
            softcap=opts.softcap,
        ), None
    return kernels.index_cross_entropy_z_loss(
        logits, targets, target_weights, z_loss=opts.z_loss, z_divisor=z_divisor,
        smoothing=smoothing, prior=prior, weight=opts.weight, ignore_index=ignore_index,
        inplace_backward=inplace_backward, divisor=divisor, softcap=opts.softcap,
    )


def _index_cross_entropy(logits: Tensor, targets: Tensor, opts: _Options,
                         inplace_backward: bool) -> _Pair:
    # The kernel reduces itself (its gradient is then ready after the forward).
    targets = targets.to(device=logits.device)
    divisor, z_divisor = _index_divisors(targets, opts, compute_dtype(logits.dtype))
    loss, z_part = _kernel(
        _class_layout(logits, opts.dim), targets.reshape(-1).to(dtype=torch.long), None, opts,
        smoothing=opts.alpha, prior=opts.prior, ignore_index=opts.ignore_index,
        inplace_backward=inplace_backward, divisor=divisor, z_divisor=z_divisor,
    )
    if divisor is None:
        return loss.reshape(targets.shape), None if z_part is None else z_part.reshape(targets.shape)
    return loss, z_part


def _check_soft_targets(logits: Tensor, targets: SoftTargets, opts: _Options) -> None:
    num_classes = logits.shape[opts.dim]
    batch_shape = logits.shape[: opts.dim] + logits.shape[opts.dim + 1 :]
    if targets.batch_shape != batch_shape:
        expected = f"SoftTargets of batch shape {tuple(batch_shape)}"
        raise v.fail("targets", expected, tuple(targets.batch_shape))
    if opts.ignore_index not in (v.IGNORE_INDEX, targets.ignore_index):
        expected = f"the SoftTargets' own ignore_index={targets.ignore_index}"
        raise v.fail("ignore_index", expected, opts.ignore_index)
    if targets.num_classes not in (None, num_classes):
        expected = f"SoftTargets for the logits' {num_classes} classes"
        raise v.fail("targets", expected, f"num_classes={targets.num_classes}")
    v.check_index_values(targets.indices, num_classes, targets.ignore_index)


def _soft_cross_entropy(logits: Tensor, targets: SoftTargets, opts: _Options) -> _Pair:
    """Cross-entropy on the dense target of ``targets``, computed from its index maps."""
    _check_soft_targets(logits, targets, opts)
    num_classes = logits.shape[opts.dim]
    batch_shape = logits.shape[: opts.dim] + logits.shape[opts.dim + 1 :]
    smoothing, prior = compose_smoothing(targets.alpha, targets.prior, opts.alpha, opts.prior)
    prior = None if prior is None else prior.to(logits.device)
    if targets.device != logits.device:
        targets = targets.to(logits.device)
    indices, target_weights = targets.rows()
    indices, ignore = indices.long(), targets.ignore_index
    rows, z_rows = _kernel(_class_layout(logits, opts.dim), indices, target_weights, opts,
                           smoothing=smoothing, prior=prior, ignore_index=ignore)
    if opts.reduction == "none":
        return rows.reshape(batch_shape), None if z_rows is None else z_rows.reshape(batch_shape)
    # The dense rule: the mean divides by sum_i sum_c w_c q_ic.
    valid = indices != ignore
    mass = target_weights.to(rows.dtype) * valid
    row_mass = mass.sum(1)
    if opts.weight is not None:
        w = opts.weight.to(rows.dtype)
        u = smoothing_distribution(num_classes, prior, dtype=rows.dtype, device=logits.device)
        true_mass = (mass * w[torch.where(valid, indices, 0)]).sum(1)
        row_mass = (1.0 - smoothing) * true_mass + smoothing * row_mass * (u @ w)
    z_count = None if z_rows is None else target_mask(indices, target_weights, ignore, rows.dtype).sum()
    return _reduce(rows, row_mass, z_rows, z_count, opts)


def _dense_cross_entropy(logits: Tensor, targets: Tensor, opts: _Options) -> _Pair:
    dim = opts.dim
    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    if opts.softcap is not None:
        z = opts.softcap * torch.tanh(z / opts.softcap)
    lse = torch.logsumexp(z, dim, keepdim=True)
    q = targets.to(dtype)
    row_sum = q.sum(dim, keepdim=True)
    if opts.alpha != 0.0:
        u = smoothing_distribution(logits.shape[dim], opts.prior, dtype=dtype, device=logits.device)
        q = (1.0 - opts.alpha) * q + opts.alpha * along_dim(u, q.dim(), dim) * row_sum
    if opts.weight is not None:
        q = q * along_dim(opts.weight.to(dtype), q.dim(), dim)
    rows = -(q * (z - lse)).sum(dim)
    z_rows, z_count = None, None
    if opts.z_loss:
        # Rows that sum to 0 are ignored positions: no z-loss there either.
        has_mass = (row_sum.squeeze(dim) > 0).to(dtype)
        z_rows = opts.z_loss * has_mass * lse.squeeze(dim).square()
        rows, z_count = rows + z_rows, has_mass.sum()
    return _reduce(rows, q.sum(dim), z_rows, z_count, opts)


def _with_z_loss(pair: _Pair, return_z_loss: bool) -> Tensor | tuple[Tensor, Tensor]:
    loss, z_part = pair
    if not v.check_flag(return_z_loss, "return_z_loss"):
        return loss
    return loss, torch.zeros_like(loss) if z_part is None else z_part


@overload
def cross_entropy(
    logits: Tensor, targets: Tensor | SoftTargets, *, alpha: float = ...,
    weight: Tensor | None = ..., ignore_index: int = ..., reduction: str = ...,
    prior: Tensor | None = ..., convention: str = ..., dim: int = ..., inplace_backward: bool = ...,
    label_smoothing: float = ..., allow_negative: bool = ..., z_loss: float = ...,
    softcap: float | None = ...,
    return_z_loss: Literal[False] = ..., num_items_in_batch: Tensor | int | None = ...,
) -> Tensor: ...


@overload
def cross_entropy(
    logits: Tensor, targets: Tensor | SoftTargets, *, alpha: float = ...,
    weight: Tensor | None = ..., ignore_index: int = ..., reduction: str = ...,
    prior: Tensor | None = ..., convention: str = ..., dim: int = ..., inplace_backward: bool = ...,
    label_smoothing: float = ..., allow_negative: bool = ..., z_loss: float = ...,
    softcap: float | None = ...,
    return_z_loss: Literal[True], num_items_in_batch: Tensor | int | None = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def cross_entropy(
    logits: Tensor, targets: Tensor | SoftTargets, *, alpha: float = ...,
    weight: Tensor | None = ..., ignore_index: int = ..., reduction: str = ...,
    prior: Tensor | None = ..., convention: str = ..., dim: int = ..., inplace_backward: bool = ...,
    label_smoothing: float = ..., allow_negative: bool = ..., z_loss: float = ...,
    softcap: float | None = ...,
    return_z_loss: bool, num_items_in_batch: Tensor | int | None = ...,
) -> Tensor | tuple[Tensor, Tensor]: ...


def cross_entropy(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    *,
    alpha: float = v.UNSET,
    weight: Tensor | None = None,
    ignore_index: int = v.IGNORE_INDEX,
    reduction: str = "mean",
    prior: Tensor | None = None,
    convention: str = "uniform",
    dim: int = 1,
    inplace_backward: bool = False,
    label_smoothing: float = v.UNSET,
    allow_negative: bool = False,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    num_items_in_batch: Tensor | int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross-entropy against label-smoothed targets, without building them.

    With ``z`` the logits of one position, ``p = softmax(z)``, ``u`` uniform
    (``1/C``) or ``prior``, ``w`` the class ``weight`` (1 when absent) and the
    smoothed target ``q = (1 - alpha) t + alpha u \sum_c t_c`` (the smoothing
    keeps each row's mass: ``t`` one-hot, or a dense row that need not sum to 1):

    .. math::
        \ell = -\sum_c w_c\, q_c \log p_c

    For index targets ``y`` this is ``(1 - alpha) w_y (-\log p_y) + alpha
    \sum_c u_c w_c (-\log p_c)``, computed from the log-softmax alone: no
    one-hot and no dense target is ever allocated. It equals PyTorch's
    ``F.cross_entropy(logits, y, weight=w, ignore_index=..., label_smoothing=alpha)``
    in loss and gradient, with one deliberate difference: a ``"mean"`` over a
    batch whose every position is ignored is 0 (zero gradients), not NaN.

    The loss is linear in dense targets; their gradient (when they require one) is

    .. math::
        \frac{\partial \ell_i}{\partial t_{ic}} = (1 - \alpha)\, w_c (-\log p_{ic})
        + \alpha \sum_{c'} u_{c'} w_{c'} (-\log p_{ic'})

    plain cross-entropy's term, and the smoothing's, the same in every class
    (each unit of a row's mass puts ``alpha u`` on the classes). Under ``"sum"``
    that is the whole gradient; under ``"none"`` it is scaled by each
    position's incoming gradient.

    ``reduction="mean"`` divides by ``sum_i w_{y_i}`` over positions that are
    not ignored (index targets, PyTorch's rule), or by ``D = sum_i sum_c w_c q_ic``
    over rows (dense targets: the number of rows when they are normalized and
    unweighted). Dense rows that sum to 0 are thereby ignored; ``ignore_index``
    applies to index targets only. As ``D`` depends on dense targets, their
    gradient (when they require one) has, besides ``(d\ell_i / dt_ic) / D``,
    the term ``-loss ((1 - alpha) w_c + alpha \sum_c' u_c' w_c') / D``: for
    unweighted targets ``-loss / D`` in every class, constant along the class
    dim, so it vanishes along any change that keeps each row's sum.

    Two options from large-vocabulary training act inside the same kernels:

    * ``softcap=k`` replaces the logits by ``k tanh(z / k)`` before anything
      else (Gemma 2); the smoothing term and the gradient go through it.
    * ``z_loss=zeta`` adds ``zeta lse^2`` per position that is not ignored,
      ``lse`` the logsumexp of the (capped) logits (PaLM). With ``"mean"`` it
      is averaged over those positions without class weights (Liger-Kernel's
      rule), with ``"sum"`` summed, with ``"none"`` added per position.

    ``num_items_in_batch`` (Hugging Face's name; an int, or a 0-dim tensor,
    read without a host sync) makes the loss ``sum_i loss_i /
    num_items_in_batch``, the z-loss included, as a global token count across
    gradient-accumulation steps or processes needs. It replaces the mean's own
    divisor (class weights then do not enter it); ``reduction`` must be
    ``"mean"`` (the default) or ``"sum"`` (Hugging Face's way of writing it),
    which then give the same number.

    Negative label smoothing (``allow_negative=True``, ``alpha`` in [-1, 0))
    moves mass from the other classes to the true one: ``q_y > 1`` and
    ``q_c = alpha u_c < 0`` elsewhere (index targets), Wei et al.'s remedy for
    heavy label noise. The loss is then **unbounded below**: its term
    ``-q_c \log p_c = |q_c| \log p_c`` goes to minus infinity as any non-target
    probability ``p_c`` goes to 0, so a model can lower it forever by widening
    its logit gaps. Wei et al. switch it on only after a warm-up with plain
    cross-entropy (``LabelSmoothing`` with a schedule that starts at 0 and goes
    negative), and a checkpoint or any other setting must then be chosen on a
    validation split, never on the test set (``labelsmooth compare`` selects
    by validation). The bound is -1 in either convention (the target at
    ``-alpha`` is the one at ``alpha`` reflected through the one-hot); with
    ``"others"`` the true class gets at most 2. With class ``weight`` and dense
    targets the mean's divisor ``D`` above can reach 0 or less for a negative
    alpha (it is then replaced by 1); index targets divide by ``sum_i w_{y_i}``.

    Logits that are a ``DTensor`` sharded on the class dim (a tensor-parallel
    output layer) get the same loss and gradient without being gathered:
    :func:`labelsmooth.tensor_parallel.dtensor_cross_entropy`, index targets.

    :class:`~labelsmooth.SoftTargets` give the loss on their dense target
    (the dense rule above; with ``weight=None`` a plain index map gives the
    index-target result), computed from their index maps without a dense
    tensor. ``alpha`` then smooths them further:
    ``1 - (1 - targets.alpha)(1 - alpha)`` (same prior required). They carry
    their own ``ignore_index``; a position counts for the z-loss when its
    target has mass.

    Args:
        logits: ``(N, C)``, ``(C,)`` with ``dim=0``, or ``(N, C, d1, ..., dK)``;
            the class dimension is ``dim`` (``dim=-1`` for ``(B, T, V)``).
        targets: class indices in ``[0, C)`` with the logits' shape without
            ``dim``, probabilities with the logits' shape, or ``SoftTargets``.
        alpha: smoothing mass in [0, 1] (in [-1, 1] with ``allow_negative``);
            0 when neither it nor ``label_smoothing`` is given. ``None`` is
            refused like any other non-number.
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
        label_smoothing: PyTorch's name for ``alpha``; giving both with
            different values is an error.
        allow_negative: accept a negative ``alpha`` (negative label smoothing,
            above), and targets already smoothed by one: dense targets with
            negative entries (checked finite only) or SoftTargets with a
            negative ``alpha``, as ``LabelSmoothing(allow_negative=True)``
            leaves them. Without it each of these is an error.
        z_loss: ``zeta >= 0``, the weight of ``lse^2``.
        softcap: ``k > 0``, or ``None`` for no cap.
        return_z_loss: also return the z-loss part alone (for logging; it is
            already in the loss, and differentiable).
        num_items_in_batch: ``None``, or the count (int or 0-dim tensor) the
            summed loss is divided by.

    Returns:
        A scalar, or with ``reduction="none"`` the per-position loss (the
        logits' shape without ``dim``). Float32 for 16-bit logits, the logits'
        dtype otherwise. With ``return_z_loss=True``, ``(loss, z_loss_part)``
        with the same shape.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(cross_entropy(logits, torch.tensor([0]), alpha=0.1).item(), 4)
        0.3729
        >>> loss, z = cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1, z_loss=1e-2,
        ...                         return_z_loss=True)
        >>> round(z.item(), 4), round((loss - z).item(), 4)  # 1e-2 * lse^2 and the loss above
        (0.0502, 0.3729)

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer
        Vision", 2016. Müller, Kornblith and Hinton, "When Does Label Smoothing
        Help?", 2019. Chowdhery et al., "PaLM: Scaling Language Modeling with
        Pathways", 2022 (z-loss). Gemma Team, "Gemma 2: Improving Open Language
        Models at a Practical Size", 2024 (logit softcapping). Wei et al., "To
        Smooth or Not? When Label Smoothing Meets Noisy Labels", ICML 2022
        (negative smoothing).
    """
    alpha = v.check_smoothing(alpha, label_smoothing, allow_negative=allow_negative)
    if is_dtensor(logits):
        if v.check_flag(inplace_backward, "inplace_backward"):
            raise v.fail("inplace_backward", "False for DTensor logits", True)
        return dtensor_cross_entropy(
            logits, targets, alpha=alpha, allow_negative=allow_negative, weight=weight,
            ignore_index=ignore_index, reduction=reduction, prior=prior, convention=convention, dim=dim,
            z_loss=z_loss, softcap=softcap, return_z_loss=return_z_loss,
            num_items_in_batch=num_items_in_batch,
        )
    logits, dim = v.check_logits(logits, dim)
    reduction = v.check_reduction(reduction)
    convention = v.check_convention(convention)
    num_classes = logits.shape[dim]
    weight = v.check_class_vector(weight, "weight", num_classes, distribution=False)
    prior = v.check_class_vector(prior, "prior", num_classes, distribution=True)
    check_prior_convention(prior, convention)
    opts = _Options(
        effective_alpha(alpha, num_classes, convention), weight, v.check_int(ignore_index, "ignore_index"),
        reduction, prior, dim, v.check_nonnegative(z_loss, "z_loss"), v.check_softcap(softcap),
        v.check_num_items(num_items_in_batch, reduction),
    )
    if isinstance(targets, SoftTargets):
        if targets.alpha < 0 and not allow_negative:
            raise v.fail("targets", f"SoftTargets smoothed by an alpha >= 0, or {v.NEGATIVE_ALPHA}", targets)
        pair = _soft_cross_entropy(logits, targets, opts)
    elif v.target_form(logits, targets, dim) == "index":
        v.check_index_values(targets, num_classes, opts.ignore_index)
        pair = _index_cross_entropy(logits, targets, opts, bool(inplace_backward))
    else:
        v.check_dense_values(targets, allow_negative=allow_negative)
        pair = _dense_cross_entropy(logits, targets, opts)
    return _with_z_loss(pair, return_z_loss)


def soft_cross_entropy(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    *,
    weight: Tensor | None = None,
    ignore_index: int = v.IGNORE_INDEX,
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


def _check_class_weights(weight: object, linear_weight: Tensor) -> Tensor | None:
    """``weight`` is class weights now; a projection matrix there is the old meaning."""
    if isinstance(weight, Tensor) and weight.dim() == 2:
        expected = ("class weights of shape (V,); pass the (V, H) projection as linear_weight "
                    "(linear_cross_entropy(input, linear_weight, target), PyTorch's names)")
        raise v.fail("weight", expected, f"a matrix of shape {tuple(weight.shape)}")
    return v.check_class_vector(weight, "weight", linear_weight.shape[0], distribution=False)


@overload
def linear_cross_entropy(
    input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = ...,
    weight: Tensor | None = ..., alpha: float = ..., ignore_index: int | None = ...,
    reduction: str = ..., label_smoothing: float = ..., allow_negative: bool = ...,
    chunk_size: int | None = ...,
    z_loss: float = ..., softcap: float | None = ..., return_z_loss: Literal[False] = ...,
    num_items_in_batch: Tensor | int | None = ..., prior: Tensor | None = ..., convention: str = ...,
) -> Tensor: ...


@overload
def linear_cross_entropy(
    input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = ...,
    weight: Tensor | None = ..., alpha: float = ..., ignore_index: int | None = ...,
    reduction: str = ..., label_smoothing: float = ..., allow_negative: bool = ...,
    chunk_size: int | None = ...,
    z_loss: float = ..., softcap: float | None = ..., return_z_loss: Literal[True],
    num_items_in_batch: Tensor | int | None = ..., prior: Tensor | None = ..., convention: str = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def linear_cross_entropy(
    input: Tensor, linear_weight: Tensor, target: Tensor, *, linear_bias: Tensor | None = ...,
    weight: Tensor | None = ..., alpha: float = ..., ignore_index: int | None = ...,
    reduction: str = ..., label_smoothing: float = ..., allow_negative: bool = ...,
    chunk_size: int | None = ...,
    z_loss: float = ..., softcap: float | None = ..., return_z_loss: bool,
    num_items_in_batch: Tensor | int | None = ..., prior: Tensor | None = ..., convention: str = ...,
) -> Tensor | tuple[Tensor, Tensor]: ...


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    alpha: float = v.UNSET,
    ignore_index: int | None = v.IGNORE_INDEX,
    reduction: str = "mean",
    label_smoothing: float = v.UNSET,
    allow_negative: bool = False,
    chunk_size: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    num_items_in_batch: Tensor | int | None = None,
    prior: Tensor | None = None,
    convention: str = "uniform",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""An output projection fused with label-smoothed cross-entropy; the logits are never held.

    Equals ``cross_entropy(F.linear(input, linear_weight, linear_bias), target,
    weight=weight, alpha=alpha, dim=-1, ...)`` in loss and in the gradients of
    ``input``, ``linear_weight`` and ``linear_bias``, but no ``(N, V)`` tensor
    exists in the forward or the backward. The smoothing term is one more
    weighted sum per row, taken while the logits are at hand,

    .. math::
        \sum_c u_c w_c z_c = h \cdot \sum_c u_c w_c W_c + \sum_c u_c w_c b_c.

    Where :func:`labelsmooth.kernels.backend` says ``"triton"`` (CUDA with
    Triton installed; float32, bfloat16 and float16 inputs) the logits exist
    only as tiles in registers (:mod:`labelsmooth.kernels.triton_linear`), and
    the backward computes them again. Elsewhere they are computed one chunk of
    rows at a time; for ``reduction="mean"`` and ``"sum"`` the gradients are
    then computed during the forward and only scaled in the backward, and
    ``"none"`` recomputes the logits in the backward.

    The signature is torch 2.13's ``F.linear_cross_entropy``: positional
    ``input, linear_weight, target``, and ``weight`` the class weights
    (PyTorch's index-target rule, as in :func:`cross_entropy`). ``softcap``,
    ``z_loss``, ``return_z_loss`` and ``num_items_in_batch`` are as in
    :func:`cross_entropy`.

    Args:
        input: ``(..., H)`` hidden states, e.g. ``(B, T, H)``.
        linear_weight: ``(V, H)`` output projection, the input's dtype.
        target: ``(...)`` class indices in ``[0, V)`` or ``ignore_index``.
        linear_bias: ``(V,)`` or ``None``.
        weight: ``(V,)`` non-negative class weights, or ``None``.
        alpha: smoothing mass in [0, 1] (uniform convention; in [-1, 1]
            with ``allow_negative``); 0 when neither it nor ``label_smoothing``
            is given.
        ignore_index: target value left out of the loss and the mean
            (``None``: -100, as PyTorch maps it).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; the mean divides by
            ``sum_i w_{y_i}`` over the targets not ignored.
        label_smoothing: PyTorch's name for ``alpha``.
        allow_negative: accept a negative ``alpha``: negative label smoothing,
            whose loss is unbounded below (see :func:`cross_entropy`).
        chunk_size: rows per chunk of the chunked path; default about 9.4M
            logits (at least 128 rows).
        z_loss, softcap, return_z_loss, num_items_in_batch, prior, convention: as in
            :func:`cross_entropy` (``alpha`` is converted to the uniform
            convention with ``C = V``).

    Returns:
        A scalar, or with ``reduction="none"`` the ``target``-shaped loss;
        with ``return_z_loss=True``, ``(loss, z_loss_part)``. Float32 for
        16-bit inputs.

    Example:
        >>> import torch
        >>> hidden, proj = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> round(linear_cross_entropy(hidden, proj, torch.tensor([0]), label_smoothing=0.1).item(), 4)
        0.3729

    References:
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
        2024. Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training", 2024.
    """
    reduction = v.check_reduction(reduction)
    chunk_size = v.check_chunk_size(chunk_size)
    v.check_linear_inputs(input, linear_weight, linear_bias, target)
    vocab = linear_weight.shape[0]
    convention = v.check_convention(convention)
    prior = v.check_class_vector(prior, "prior", vocab, distribution=True)
    check_prior_convention(prior, convention)
    opts = _Options(
        effective_alpha(v.check_smoothing(alpha, label_smoothing, allow_negative=allow_negative), vocab,
                        convention),
        _check_class_weights(weight, linear_weight),
        v.IGNORE_INDEX if ignore_index is None else v.check_int(ignore_index, "ignore_index"), reduction,
        prior, -1, v.check_nonnegative(z_loss, "z_loss"), v.check_softcap(softcap),
        v.check_num_items(num_items_in_batch, reduction),
    )
    v.check_index_values(target, linear_weight.shape[0], opts.ignore_index, "target")
    targets = target.reshape(-1).to(device=input.device, dtype=torch.long)
    divisor, z_divisor = _index_divisors(targets, opts, compute_dtype(input.dtype))
    result = kernels.fused_linear_cross_entropy(
        input.reshape(-1, input.shape[-1]), linear_weight, targets, bias=linear_bias,
        smoothing=opts.alpha, ignore_index=opts.ignore_index, divisor=divisor, chunk_size=chunk_size,
        class_weight=opts.weight, z_loss=opts.z_loss, z_divisor=z_divisor, softcap=opts.softcap,
        prior=None if prior is None else prior.to(input.device),
    )
    loss, z_part = result if isinstance(result, tuple) else (result, None)
    if divisor is None:
        loss = loss.reshape(target.shape)
        z_part = None if z_part is None else z_part.reshape(target.shape)
    return _with_z_loss((loss, z_part), return_z_loss)

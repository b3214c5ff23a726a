r"""Label smoothing across processes: vocabulary-parallel logits and data-parallel means.

Tensor parallelism
    :func:`vocab_parallel_cross_entropy` takes the local slice of a vocabulary
    split over the ranks of a process group and returns the loss of the full
    logits, exactly. For one row with logits ``z`` over ``C = world * V_local``
    classes and the smoothed target ``q = (1 - a) onehot(y) + a / C``::

        loss = lse(z) - (1 - a) z_y - (a / C) sum_c z_c

    needs four per-row numbers: the row max and the sum of exponentials (for
    ``lse``), the target logit and the sum of logits (weighted by ``u_c w_c``
    with a ``prior`` or class ``weight``). Each is reduced over the group with
    one all-reduce (MAX, then one SUM for the other three), and the gradient
    of the local shard, ``softmax(z)_local - (1 - a) onehot_local - a / C``,
    needs no communication at all.

    Megatron-LM's ``vocab_parallel_cross_entropy`` (and the copies of it in
    NeMo and Megatron-DeepSpeed) is wrong for ``label_smoothing > 0`` above one
    rank: it averages the log-probabilities of the *local* shard only and uses
    the *local* vocabulary size in ``alpha * K / (K - 1)``, so every rank
    computes a different loss and none of them is the loss of the full logits
    (Megatron-LM issue 737). ``tests/test_distributed.py`` computes that formula
    next to this one. For logits that are a DTensor sharded on the class dim,
    :func:`labelsmooth.tensor_parallel.dtensor_cross_entropy` runs the same
    math with the process group of the mesh dim that shards the classes.

Data parallelism
    Under DDP every rank computes a loss on its own micro-batch and DDP
    *averages* the gradients over the ``W`` ranks. With ``reduction="mean"``
    each rank divides by its *own* count of non-ignored items, so ranks with
    many ignored positions (padding) weigh as much as full ones, and the
    gradient is not the one of the combined batch. Dividing the summed loss
    by the global count instead, and multiplying by ``W`` to undo DDP's
    average, gives exactly the gradient of single-process training on the
    combined batch (Hugging Face fixed the same problem in its Trainer for
    gradient accumulation, transformers issue 46731)::

        n = global_num_items(targets)                    # one all-reduce
        loss = cross_entropy(logits, targets, alpha=0.1, reduction="sum") * world_size / n

    The all-reduce mean of that per-rank loss is the combined batch's mean
    loss, so logged values stay comparable with single-process runs. With
    tensor and data parallelism together, the same normalizer goes to
    ``vocab_parallel_cross_entropy(..., num_items=global_num_items(targets,
    group=dp_group) / dp_world_size)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth._reduction import mean_divisor
from labelsmooth._smoothing import weighted_distribution
from labelsmooth.targets import check_prior_convention, effective_alpha

__all__ = ["global_num_items", "vocab_parallel_cross_entropy"]


def _group_rank_and_size(group: Any) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` when no process group exists."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise v.fail("group", "None when torch.distributed is not initialized", group)
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_reduce(tensor: Tensor, op: str, group: Any, world_size: int) -> Tensor:
    """All-reduce ``tensor`` in place with ``op`` (``"sum"`` or ``"max"``) above one rank."""
    if world_size > 1:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op.upper()), group=group)
    return tensor


@dataclass(frozen=True)
class ClassShard:
    """This rank's classes ``[offset, offset + size)`` of ``num_classes``, split over ``group``."""

    offset: int
    num_classes: int
    group: Any
    world_size: int


@dataclass(frozen=True)
class _RowTerms:
    """What class weights ``w`` and the smoothing distribution ``u`` contribute to each row.

    ``target_weight``: ``w_{y_i}`` (0 at ignored rows); ``smooth_weight``: the
    local slice of ``u_c w_c`` (``None``: uniform and unweighted, ``1 / C``);
    ``smooth_mass``: ``sum_c u_c w_c`` over all ``C`` classes.
    """

    target_weight: Tensor
    smooth_weight: Tensor | None
    smooth_mass: Tensor | float


@dataclass(frozen=True)
class _Options:
    """PaLM's z-loss weight and Gemma 2's logit cap (``None``: no cap)."""

    z_loss: float = 0.0
    softcap: float | None = None


class _VocabParallelRows(torch.autograd.Function):
    """Per-row smoothed cross-entropy of vocabulary-sharded logits ``(M, V_local)`` and the
    rows' z-loss ``zeta v_i lse_i^2``: two outputs, both differentiable."""

    @staticmethod
    def forward(
        ctx: Any, shard: Tensor, targets: Tensor, smoothing: float, ignore_index: int,
        terms: _RowTerms, where: ClassShard, options: _Options,
    ) -> tuple[Tensor, Tensor]:
        x, _ = _capped(shard, options.softcap)
        valid = targets != ignore_index
        local = targets - where.offset
        in_shard = valid & (local >= 0) & (local < x.shape[-1])
        local = torch.where(in_shard, local, 0)

        # The global row max keeps exp() from overflowing; it cancels in lse.
        row_max = _all_reduce(x.max(-1).values, "max", where.group, where.world_size)
        exp = torch.exp(x - row_max.unsqueeze(-1))
        if terms.smooth_weight is None:
            smooth_logits = x.sum(-1) / where.num_classes
        else:
            smooth_logits = x @ terms.smooth_weight
        stats = torch.stack([
            exp.sum(-1), x.gather(-1, local.unsqueeze(-1)).squeeze(-1) * in_shard, smooth_logits,
        ])
        sum_exp, target_logit, smooth_logits = _all_reduce(stats, "sum", where.group, where.world_size)
        lse = row_max + torch.log(sum_exp)
        # In x's dtype: a bool times a Python float would make a float32 tensor.
        valid_x = valid.to(x.dtype)
        # sum_c q_c w_c, the row's total target mass: lse enters the loss that many times.
        mass = (1.0 - smoothing) * terms.target_weight + smoothing * terms.smooth_mass * valid_x
        rows: Tensor = (
            mass * lse - (1.0 - smoothing) * terms.target_weight * target_logit
            - smoothing * smooth_logits * valid_x
        )
        ctx.save_for_backward(shard, row_max, sum_exp, local, in_shard, valid_x, mass, lse)
        ctx.smoothing, ctx.terms, ctx.options = smoothing, terms, options
        ctx.num_classes = where.num_classes
        return rows, options.z_loss * valid_x * lse.square()

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor, grad_z: Tensor) -> tuple[Tensor | None, ...]:
        shard, row_max, sum_exp, local, in_shard, valid_x, mass, lse = ctx.saved_tensors
        smoothing: float = ctx.smoothing
        terms: _RowTerms = ctx.terms
        options: _Options = ctx.options
        x, tanh = _capped(shard, options.softcap)
        # softmax of the local columns, normalized by the global sum; the z-loss
        # adds 2 zeta v lse softmax to the rows that have a target.
        scale_p = mass * grad_rows + (2.0 * options.z_loss) * valid_x * lse * grad_z
        grad = torch.exp(x - row_max.unsqueeze(-1)) / sum_exp.unsqueeze(-1) * scale_p.unsqueeze(-1)
        smooth = 1.0 / ctx.num_classes if terms.smooth_weight is None else terms.smooth_weight
        grad = grad - smoothing * smooth * (valid_x * grad_rows).unsqueeze(-1)
        true_class = -(1.0 - smoothing) * terms.target_weight * in_shard * grad_rows
        grad.scatter_add_(-1, local.unsqueeze(-1), true_class.unsqueeze(-1))
        if tanh is not None:
            grad = grad * (1 - tanh * tanh)  # through k tanh(x / k)
        return grad.to(shard.dtype), None, None, None, None, None, None


def _capped(shard: Tensor, softcap: float | None) -> tuple[Tensor, Tensor | None]:
    """``(k tanh(x / k), tanh(x / k))`` in the compute dtype, or ``(x, None)`` without a cap."""
    x = shard.to(compute_dtype(shard.dtype))
    if softcap is None:
        return x, None
    tanh = torch.tanh(x / softcap)
    return softcap * tanh, tanh


def _row_terms(
    targets: Tensor, weight: Tensor | None, prior: Tensor | None, ignore_index: int,
    where: ClassShard, size: int, dtype: torch.dtype,
) -> _RowTerms:
    valid = targets != ignore_index
    if weight is None and prior is None:
        return _RowTerms(valid.to(dtype), None, 1.0)
    device = targets.device
    target_weight = valid.to(dtype)
    if weight is not None:
        target_weight = weight.to(device, dtype)[torch.where(valid, targets, 0)] * valid
    smooth = weighted_distribution(where.num_classes, prior, weight, dtype=dtype, device=device)
    return _RowTerms(target_weight, smooth[where.offset : where.offset + size], smooth.sum())


@dataclass(frozen=True)
class ShardedRows:
    """Per-row results of :func:`sharded_cross_entropy_rows`, all ``(M,)``."""

    #: The smoothed cross-entropy of each row.
    rows: Tensor
    #: ``zeta v_i lse_i^2`` (zeros without a z-loss).
    z_rows: Tensor
    #: ``w_{y_i}`` (0 where ignored), whose sum ``"mean"`` divides the cross-entropy by.
    row_weight: Tensor
    #: ``v_i``, 1 where the target is not ignored: the z-loss mean's count.
    valid: Tensor

    def reduce(self, reduction: str, num_items: Tensor | float | int | None) -> Tensor:
        """The loss of these rows, z-loss included: per row, summed, or their mean (the
        cross-entropy over ``sum_i w_{y_i}``, the z-loss over the count; ``num_items``
        divides both sums instead)."""
        if reduction == "none":
            return self.rows + self.z_rows
        total = (self.rows + self.z_rows).sum()
        if reduction == "sum":
            return total
        if num_items is not None:
            return total / mean_divisor(num_items, total)
        return (self.rows.sum() / mean_divisor(self.row_weight.sum(), total)
                + self.z_rows.sum() / mean_divisor(self.valid.sum(), total))


def sharded_cross_entropy_rows(
    shard: Tensor, targets: Tensor, *, smoothing: float, weight: Tensor | None, prior: Tensor | None,
    ignore_index: int, where: ClassShard, z_loss: float = 0.0, softcap: float | None = None,
) -> ShardedRows:
    r"""Per-row loss of class-sharded logits, with the numbers the reductions need.

    The computation behind :func:`vocab_parallel_cross_entropy` and
    :func:`labelsmooth.tensor_parallel.dtensor_cross_entropy`: two
    all-reduces over ``where.group``, none in backward.

    Args:
        shard: ``(M, V_local)`` logits of the classes ``where`` describes.
        targets: ``(M,)`` int64 global class indices or ``ignore_index``,
            the same on every rank of ``where.group``.
        smoothing: ``"uniform"``-convention alpha.
        weight, prior: checked full ``(C,)`` vectors, or ``None``.
        ignore_index: the ignored target value.
        where: the shard's place in the ``C`` classes.
        z_loss: checked ``zeta >= 0``; ``lse`` is taken over the capped logits.
        softcap: checked ``k > 0`` (every logit becomes ``k tanh(x / k)``), or ``None``.
    """
    dtype = compute_dtype(shard.dtype)
    terms = _row_terms(targets, weight, prior, ignore_index, where, shard.shape[-1], dtype)
    rows, z_rows = _VocabParallelRows.apply(  # type: ignore[no-untyped-call]
        shard, targets, smoothing, ignore_index, terms, where, _Options(z_loss, softcap),
    )
    return ShardedRows(rows, z_rows, terms.target_weight, (targets != ignore_index).to(dtype))


def vocab_parallel_cross_entropy(
    logits_shard: Tensor,
    targets: Tensor,
    *,
    alpha: float = 0.0,
    weight: Tensor | None = None,
    ignore_index: int = v.IGNORE_INDEX,
    reduction: str = "mean",
    prior: Tensor | None = None,
    convention: str = "uniform",
    group: Any = None,
    num_items: Tensor | float | int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    allow_negative: bool = False,
) -> Tensor:
    r"""Smoothed cross-entropy of logits whose vocabulary is split over the ranks of ``group``.

    Rank ``r`` of a group of ``W`` ranks holds the classes
    ``[r * V_local, (r + 1) * V_local)``, so ``C = W * V_local``. The result is
    :func:`labelsmooth.cross_entropy` of the full logits (class dim last), with
    the global class count ``C`` in the smoothing term, on every rank; the
    gradient that reaches ``logits_shard`` is the full gradient's local slice.
    With ``u`` uniform (``1 / C``) or ``prior`` and ``w`` the class ``weight``
    (1 when absent), PyTorch's index-target rule:

    .. math::
        \ell = (1 - a)\, w_y (\operatorname{lse}(z) - z_y)
             + a \sum_{c<C} u_c w_c (\operatorname{lse}(z) - z_c),
        \qquad
        \frac{\partial \ell}{\partial z_c}
             = m \operatorname{softmax}(z)_c - (1 - a) w_y [c = y] - a u_c w_c

    with ``m = (1 - a) w_y + a sum_c u_c w_c``; ``"mean"`` divides the sum by
    ``sum_i w_{y_i}`` over the non-ignored positions.

    Two all-reduces per call (row max; sum of exponentials, target logit and
    smoothing sum together), none in backward. Without an initialized process
    group (and ``group=None``) it runs as one rank.

    Args:
        logits_shard: ``(N, V_local)`` or ``(B, T, V_local)``: this rank's
            contiguous, equal slice of the vocabulary (every rank has the
            same ``V_local``).
        targets: ``(N,)`` or ``(B, T)`` global class indices in ``[0, C)`` or
            ``ignore_index``, identical on every rank of ``group``.
        alpha: smoothing mass in [0, 1], or in [-1, 1] with ``allow_negative``.
        weight: ``(C,)`` non-negative class weights for the *full*
            vocabulary, the same on every rank (as ``loss_parallel`` takes
            them replicated); each rank uses its slice.
        ignore_index: target value left out of the loss and the mean.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        prior: ``(C,)`` distribution over the full vocabulary to smooth
            towards instead of uniform (``convention="uniform"`` only).
        convention: ``"uniform"`` (``alpha / C`` on every class) or
            ``"others"`` (``alpha / (C - 1)`` on the other classes), with the
            global ``C``.
        group: the tensor-parallel process group (``None``: the default group).
        num_items: what ``"mean"`` divides the sum by instead of
            ``sum_i w_{y_i}``, e.g. a data-parallel normalizer built from
            :func:`global_num_items`.
        z_loss: ``zeta >= 0``: adds ``zeta lse^2`` per position that is not
            ignored (PaLM), averaged over those positions without class weights
            by ``"mean"`` (as :func:`labelsmooth.cross_entropy` does).
        softcap: ``k > 0`` replaces every logit by ``k tanh(x / k)`` before
            anything else (Gemma 2), or ``None``. Both need no communication
            beyond the two all-reduces.
        allow_negative: accept a negative ``alpha`` (negative label smoothing:
            the loss is then unbounded below; see :func:`labelsmooth.cross_entropy`).

    Returns:
        A scalar, or with ``reduction="none"`` the per-position loss of the
        targets' shape. Float32 for 16-bit logits.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(vocab_parallel_cross_entropy(logits, torch.tensor([0]), alpha=0.1).item(), 4)
        0.3729

    References:
        Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language
        Models Using Model Parallelism", 2019 (the vocabulary-parallel layout).
    """
    logits_shard, _ = v.check_logits(logits_shard, -1)
    alpha = v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    reduction = v.check_reduction(reduction)
    convention = v.check_convention(convention)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    rank, world_size = _group_rank_and_size(group)
    v_local = logits_shard.shape[-1]
    where = ClassShard(rank * v_local, v_local * world_size, group, world_size)
    weight = v.check_class_vector(weight, "weight", where.num_classes, distribution=False)
    prior = v.check_class_vector(prior, "prior", where.num_classes, distribution=True)
    check_prior_convention(prior, convention)
    if v.target_form(logits_shard, targets, logits_shard.dim() - 1) != "index":
        raise v.fail("targets", "class indices (dense targets are not vocabulary-parallel)",
                     tuple(targets.shape))
    v.check_index_values(targets, where.num_classes, ignore_index)
    flat_targets = targets.reshape(-1).to(device=logits_shard.device, dtype=torch.long)
    sharded = sharded_cross_entropy_rows(
        logits_shard.reshape(-1, v_local), flat_targets,
        smoothing=effective_alpha(alpha, where.num_classes, convention),
        weight=weight, prior=prior, ignore_index=ignore_index, where=where,
        z_loss=v.check_nonnegative(z_loss, "z_loss"), softcap=v.check_softcap(softcap),
    )
    loss = sharded.reduce(reduction, num_items)
    return loss.reshape(targets.shape) if reduction == "none" else loss


def global_num_items(targets: Tensor, *, ignore_index: int = v.IGNORE_INDEX, group: Any = None) -> Tensor:
    """The number of targets not equal to ``ignore_index``, summed over the ranks of ``group``.

    Under DDP (``W`` ranks that average gradients), dividing each rank's
    summed loss by ``global_num_items(targets) / W`` gives the gradient of the
    mean over the combined batch, however the ignored positions are spread
    over the ranks. Without an initialized process group it is the local count.

    Args:
        targets: index targets of any shape.
        ignore_index: the value that marks ignored positions.
        group: the data-parallel process group (``None``: the default group).

    Returns:
        An int64 scalar tensor on ``targets``' device, equal on every rank.

    Example:
        >>> import torch
        >>> global_num_items(torch.tensor([[1, 2, -100], [0, -100, -100]]))
        tensor(3)
    """
    targets = v.check_tensor(targets, "targets")
    ignore_index = v.check_int(ignore_index, "ignore_index")
    _, world_size = _group_rank_and_size(group)
    count = (targets != ignore_index).sum().to(torch.int64)
    return _all_reduce(count, "sum", group, world_size)

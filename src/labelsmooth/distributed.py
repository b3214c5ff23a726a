r"""Label smoothing across processes: vocabulary-parallel logits and data-parallel means.

Tensor parallelism
    :func:`vocab_parallel_cross_entropy` takes the local slice of a vocabulary
    split over the ranks of a process group and returns the loss of the full
    logits, exactly. For one row with logits ``z`` over ``C = world * V_local``
    classes and the smoothed target ``q = (1 - a) onehot(y) + a / C``::

        loss = lse(z) - (1 - a) z_y - (a / C) sum_c z_c

    needs four per-row numbers: the row max and the sum of exponentials (for
    ``lse``), the target logit and the sum of logits. Each is reduced over the
    group with one all-reduce (MAX, then one SUM for the other three), and the
    gradient of the local shard, ``softmax(z)_local - (1 - a) onehot_local - a / C``,
    needs no communication at all.

    Megatron-LM's ``vocab_parallel_cross_entropy`` (and the copies of it in
    NeMo and Megatron-DeepSpeed) is wrong for ``label_smoothing > 0`` above one
    rank: it averages the log-probabilities of the *local* shard only and uses
    the *local* vocabulary size in ``alpha * K / (K - 1)``, so every rank
    computes a different loss and none of them is the loss of the full logits
    (Megatron-LM issue 737). ``tests/test_distributed.py`` computes that formula
    next to this one.

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

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.targets import compute_dtype, effective_alpha

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


class _VocabParallelRows(torch.autograd.Function):
    """Per-row smoothed cross-entropy of vocabulary-sharded logits ``(M, V_local)``."""

    @staticmethod
    def forward(
        ctx: Any, shard: Tensor, targets: Tensor, smoothing: float, ignore_index: int,
        rank: int, world_size: int, group: Any,
    ) -> Tensor:
        x = shard.to(compute_dtype(shard.dtype))
        v_local = x.shape[-1]
        num_classes = v_local * world_size
        valid = targets != ignore_index
        local = targets - rank * v_local
        in_shard = valid & (local >= 0) & (local < v_local)
        local = torch.where(in_shard, local, 0)

        # The global row max keeps exp() from overflowing; it cancels in lse.
        row_max = _all_reduce(x.max(-1).values, "max", group, world_size)
        exp = torch.exp(x - row_max.unsqueeze(-1))
        stats = torch.stack([
            exp.sum(-1),
            x.gather(-1, local.unsqueeze(-1)).squeeze(-1) * in_shard,
            x.sum(-1),
        ])
        sum_exp, target_logit, sum_logits = _all_reduce(stats, "sum", group, world_size)
        lse = row_max + torch.log(sum_exp)
        rows: Tensor = lse - (1.0 - smoothing) * target_logit - (smoothing / num_classes) * sum_logits
        rows = rows * valid

        ctx.save_for_backward(shard, row_max, sum_exp, local, in_shard, valid)
        ctx.smoothing = smoothing
        ctx.num_classes = num_classes
        return rows

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, ...]:
        shard, row_max, sum_exp, local, in_shard, valid = ctx.saved_tensors
        smoothing: float = ctx.smoothing
        x = shard.to(compute_dtype(shard.dtype))
        # softmax of the local columns, normalized by the global sum.
        grad = torch.exp(x - row_max.unsqueeze(-1)) / sum_exp.unsqueeze(-1)
        grad = grad - smoothing / ctx.num_classes
        grad.scatter_add_(-1, local.unsqueeze(-1), -(1.0 - smoothing) * in_shard.to(grad.dtype).unsqueeze(-1))
        grad = grad * (grad_rows * valid).unsqueeze(-1)
        return grad.to(shard.dtype), None, None, None, None, None, None


def _normalizer(count: Tensor | float | int, like: Tensor) -> Tensor:
    count = torch.as_tensor(count, dtype=like.dtype, device=like.device)
    # A zero count means every item is ignored: the sum is 0 and so is the mean.
    return torch.where(count > 0, count, torch.ones_like(count))


def vocab_parallel_cross_entropy(
    logits_shard: Tensor,
    targets: Tensor,
    *,
    alpha: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    convention: str = "uniform",
    group: Any = None,
    num_items: Tensor | float | int | None = None,
) -> Tensor:
    r"""Smoothed cross-entropy of logits whose vocabulary is split over the ranks of ``group``.

    Rank ``r`` of a group of ``W`` ranks holds the classes
    ``[r * V_local, (r + 1) * V_local)``, so ``C = W * V_local``. The result is
    :func:`labelsmooth.cross_entropy` of the full logits (class dim last), with
    the global class count ``C`` in the smoothing term, on every rank; the
    gradient that reaches ``logits_shard`` is the full gradient's local slice:

    .. math::
        \ell = \operatorname{lse}(z) - (1 - a) z_y - \frac{a}{C}\sum_{c<C} z_c,
        \qquad
        \frac{\partial \ell}{\partial z_c} = \operatorname{softmax}(z)_c - (1 - a)[c = y] - \frac{a}{C}

    Two all-reduces per call (row max; sum of exponentials, target logit and
    sum of logits together), none in backward. Without an initialized process
    group (and ``group=None``) it runs as one rank.

    Args:
        logits_shard: ``(N, V_local)`` or ``(B, T, V_local)``: this rank's
            contiguous, equal slice of the vocabulary (every rank has the
            same ``V_local``).
        targets: ``(N,)`` or ``(B, T)`` global class indices in ``[0, C)`` or
            ``ignore_index``, identical on every rank of ``group``.
        alpha: smoothing mass in [0, 1].
        ignore_index: target value left out of the loss and the mean.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        convention: ``"uniform"`` (``alpha / C`` on every class) or
            ``"others"`` (``alpha / (C - 1)`` on the other classes), with the
            global ``C``.
        group: the tensor-parallel process group (``None``: the default group).
        num_items: what ``"mean"`` divides the sum by instead of the number of
            non-ignored targets, e.g. a data-parallel normalizer built from
            :func:`global_num_items`.

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
    alpha = v.check_probability(alpha, "alpha")
    reduction = v.check_reduction(reduction)
    convention = v.check_convention(convention)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    rank, world_size = _group_rank_and_size(group)
    num_classes = logits_shard.shape[-1] * world_size
    if v.target_form(logits_shard, targets, logits_shard.dim() - 1) != "index":
        raise v.fail("targets", "class indices (dense targets are not vocabulary-parallel)",
                     tuple(targets.shape))
    v.check_index_values(targets, num_classes, ignore_index)
    smoothing = effective_alpha(alpha, num_classes, convention)
    flat_targets = targets.reshape(-1).to(device=logits_shard.device, dtype=torch.long)
    rows: Tensor = _VocabParallelRows.apply(  # type: ignore[no-untyped-call]
        logits_shard.reshape(-1, logits_shard.shape[-1]), flat_targets, smoothing, ignore_index,
        rank, world_size, group,
    )
    if reduction == "none":
        return rows.reshape(targets.shape)
    total = rows.sum()
    if reduction == "sum":
        return total
    count = (flat_targets != ignore_index).sum() if num_items is None else num_items
    return total / _normalizer(count, total)


def global_num_items(targets: Tensor, *, ignore_index: int = -100, group: Any = None) -> Tensor:
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

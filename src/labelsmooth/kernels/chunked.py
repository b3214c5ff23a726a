"""The chunked kernel: the fallback that needs no compiler, eager ATen operations over row chunks.

Same math as :mod:`labelsmooth.kernels.rowmath`. The rows are walked in
chunks, each read from memory once (every further pass over it hits the
cache). When the logits need a gradient, the forward runs one fused
``softmax`` per chunk straight into the gradient buffer, takes
``lse = max z - log max p`` and the row sums from the cached chunk, and turns
the softmax into the gradient for an incoming gradient of 1 in place; the
backward only scales it. Otherwise (no gradient, or ``inplace_backward``) the
forward runs one fused ``log_softmax`` per chunk into a reused scratch buffer
and keeps O(M) numbers, and a backward recomputes ``softmax`` chunk by chunk
into the gradient, or over the logits' own storage with
``inplace_backward=True``.

Every operation on a chunk is its own parallel region of the intra-op thread
pool, so each waits for the slowest thread: on a busy machine this kernel is
several times slower than :mod:`labelsmooth.kernels.fused` (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels.rowmath import Layout, class_mass, gradient_scales, row_coefficients

#: Elements per chunk: a chunk of float32 logits and its gradient fit in a
#: 32 MiB L3 together, and few chunks keep the count of parallel regions low.
DEFAULT_CHUNK_ELEMENTS = 1 << 21


def rows_per_chunk(num_classes: int, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about ``DEFAULT_CHUNK_ELEMENTS`` elements."""
    if chunk_size is not None:
        return chunk_size
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, num_classes))


def _weighted_class_sum(layout: Layout, log_p: Tensor, vector: Tensor | None, out: Tensor) -> None:
    """``out = sum_c vector_c log_p[:, c]``; ``vector=None`` means uniform ``1 / C``."""
    if layout.spatial is None:
        if vector is None:
            # A row sum and a scalar divide: cheaper than a matrix-vector product.
            torch.sum(log_p, 1, out=out[:, 0])
            out.div_(layout.num_classes)
        else:
            torch.mv(log_p, vector, out=out[:, 0])
    else:
        # (C,) @ (n, C, S): a batched BLAS product, far cheaper than einsum here.
        if vector is None:
            vector = torch.full((layout.num_classes,), 1.0 / layout.num_classes, dtype=log_p.dtype,
                                device=log_p.device)
        torch.matmul(vector, log_p, out=out[:, 0])


Scales = tuple[Tensor, Tensor, Tensor, Tensor, "Tensor | None"]


def _softmax_to_gradient_(out: Tensor, scales: Scales, start: int, stop: int) -> None:
    """``out = scale_p p - scale_u cm + scale_y onehot`` for rows ``start:stop``; ``out`` holds ``p``."""
    scale_p, scale_u, scale_y, index = (part[start:stop] for part in scales[:4])
    class_column = scales[4]
    out.mul_(scale_p)
    if class_column is None:
        # Two in-place passes over the cached chunk: cheaper than one
        # broadcasting addcmul with a constant.
        out.sub_(scale_u)
    else:
        out.addcmul_(scale_u, class_column, value=-1)
    out.scatter_add_(1, index, scale_y.to(out.dtype))


class ChunkedIndexCrossEntropy(torch.autograd.Function):
    """Autograd function behind :func:`index_cross_entropy_rows`: the per-row loss, or its scaled sum."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, target_weights: Tensor | None,
        smoothing: float, prior: Tensor | None, weight: Tensor | None, ignore_index: int,
        inplace_backward: bool, chunk_size: int | None, divisor: Tensor | float | None,
        precompute: bool,
    ) -> Tensor:
        layout = Layout(logits.shape)
        rows, num_classes = layout.batch, layout.num_classes
        dtype = compute_dtype(logits.dtype)
        cm = class_mass(num_classes, prior, weight, dtype=dtype, device=logits.device)
        mass_sum = 1.0 if cm is None else cm.sum()
        index, tw, coef_a, smooth_mass = row_coefficients(
            targets, target_weights, smoothing=smoothing, weight=weight,
            ignore_index=ignore_index, mass_sum=mass_sum, dtype=dtype,
        )
        step = rows_per_chunk(num_classes * (layout.spatial or 1), chunk_size)
        # -log p at the targets (M, K) and the smoothing term sum_c cm_c (-log p_c) (M,).
        nll_y = layout.view(torch.empty(index.shape, dtype=dtype, device=logits.device))
        nll_smooth = layout.view(torch.zeros(layout.positions, dtype=dtype, device=logits.device))
        index_view = layout.view(index)
        work = None
        if not precompute or logits.dtype != dtype:
            work = torch.empty((min(step, rows), *logits.shape[1:]), dtype=dtype, device=logits.device)
        grad, scales, lse = None, None, None
        if precompute:
            lse = layout.view(torch.empty(layout.positions, dtype=dtype, device=logits.device))
            # The gradient for an incoming gradient of 1 (per row, or of the
            # sum / divisor), written in the forward's pass over each chunk:
            # one exp per element in all, none in the backward.
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
            unit = coef_a.new_ones(()) if divisor is None else 1.0 / torch.as_tensor(divisor, dtype=dtype)
            scales = _gradient_scales(layout, unit.expand(coef_a.shape), coef_a, smooth_mass, tw,
                                      index, cm)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            chunk = logits[start:stop]
            if work is not None and logits.dtype != dtype:
                # 16-bit logits: a float32 copy of the chunk, read from memory once.
                chunk = work[: stop - start].copy_(chunk)
            if grad is None or scales is None or lse is None:
                # One fused pass per row (max, sum of exp, write); the chunk
                # stays in cache for the rest.
                out = None if work is None else work[: stop - start]  # work exists on this path
                log_p = torch.log_softmax(chunk, 1, out=out)
                nll_y[start:stop] = torch.gather(log_p, 1, index_view[start:stop]).neg_()
                if smoothing != 0.0:
                    _weighted_class_sum(layout, log_p, cm, nll_smooth[start:stop])
                    nll_smooth[start:stop].neg_()
                continue
            # z at the targets and sum_c cm_c z_c while the chunk is in cache,
            # then softmax in one fused pass (in place over the float32 copy of
            # a 16-bit chunk): lse = max z - log max p, as max p = 1 / sum exp(z - max z).
            # (z_y and z . cm are kept in nll_y and nll_smooth until after the loop.)
            out = grad[start:stop]
            p = out if work is None else chunk
            if work is None:
                torch.softmax(chunk, 1, out=p)
            nll_y[start:stop] = torch.gather(chunk, 1, index_view[start:stop])
            if smoothing != 0.0:
                _weighted_class_sum(layout, chunk, cm, nll_smooth[start:stop])
            row_max = chunk.amax(1, keepdim=True)
            if work is not None:
                torch.softmax(chunk, 1, out=p)
            lse[start:stop] = row_max.sub_(p.amax(1, keepdim=True).log_())
            _softmax_to_gradient_(p, scales, start, stop)
            if p is not out:
                out.copy_(p)
        nll_y = layout.flat(nll_y)
        nll_smooth = layout.flat(nll_smooth).reshape(-1)
        if lse is not None:
            lse = layout.flat(lse).reshape(-1)
            nll_y = lse[:, None] - nll_y
            nll_smooth = lse * mass_sum - nll_smooth
        loss = (tw * nll_y).sum(1) + smooth_mass * nll_smooth
        ctx.save_for_backward(logits, index, tw, coef_a, smooth_mass, cm)
        ctx.layout = layout
        ctx.inplace_backward = inplace_backward
        ctx.step = step
        ctx.divisor = divisor
        ctx.grad = grad
        ctx.component_loss = None
        if target_weights is not None and ctx.needs_input_grad[2]:
            # d loss_i / d lam_ik, for callers that learn mixing weights.
            valid = (targets.reshape(index.shape) != ignore_index).to(dtype)
            per_mass = tw / torch.where(valid > 0, target_weights.reshape(index.shape).to(dtype), 1.0)
            ctx.target_weights_shape = target_weights.shape
            ctx.component_loss = valid * (per_mass * nll_y + smoothing * nll_smooth[:, None])
        return loss if divisor is None else loss.sum() / divisor

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logits, index, tw, coef_a, smooth_mass, cm = ctx.saved_tensors
        layout = ctx.layout
        dtype = coef_a.dtype
        grad_out = grad_out.to(dtype)
        grads: list[Tensor | None] = [None] * 11
        grad, ctx.grad = ctx.grad, None
        if grad is not None and ctx.needs_input_grad[0]:
            # Computed in the forward for an incoming gradient of 1: scale it
            # and let go, so autograd adopts it as .grad without a copy.
            if ctx.divisor is None:
                grad.mul_(layout.view(grad_out))
            elif not bool(grad_out == 1):
                grad.mul_(grad_out)
            grads[0] = grad
        grad_loss = grad_out if ctx.divisor is None else (grad_out / ctx.divisor).expand(coef_a.shape)
        if ctx.component_loss is not None:
            grads[2] = (grad_loss[:, None] * ctx.component_loss).reshape(ctx.target_weights_shape)
        if not ctx.needs_input_grad[0] or grads[0] is not None:
            return tuple(grads)
        # No gradient from the forward (in place, or a second backward through
        # a retained graph): recompute softmax chunk by chunk into the gradient.
        scales = _gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, index, cm)
        if ctx.inplace_backward:
            # A plain alias of the storage: autograd must not see the logits
            # (a leaf, possibly) handed back as their own gradient.
            grad = logits.detach()
        else:
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        step = ctx.step
        work = None
        if logits.dtype != dtype:
            work = torch.empty((min(step, layout.batch), *logits.shape[1:]), dtype=dtype,
                               device=logits.device)
        for start in range(0, layout.batch, step):
            stop = min(start + step, layout.batch)
            out = grad[start:stop]
            # Recomputed in one fused pass per row (precise as PyTorch's own);
            # each row is read before its (possibly aliased) gradient is written.
            # 16-bit logits: computed in a float32 copy of the chunk and rounded
            # once, as the forward does it.
            p = out if work is None else work[: stop - start].copy_(logits[start:stop])
            torch.softmax(logits[start:stop] if work is None else p, 1, out=p)
            _softmax_to_gradient_(p, scales, start, stop)
            if p is not out:
                out.copy_(p)
        grads[0] = grad
        return tuple(grads)


def _gradient_scales(
    layout: Layout, grad_loss: Tensor, coef_a: Tensor, smooth_mass: Tensor, tw: Tensor,
    index: Tensor, cm: Tensor | None,
) -> Scales:
    """:func:`~labelsmooth.kernels.rowmath.gradient_scales`, the index viewed against a chunk,
    and ``cm`` as a class column."""
    scale_p, scale_u, scale_y = gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, cm)
    return scale_p, scale_u, scale_y, layout.view(index), layout.class_column(cm)


def chunked_cross_entropy_rows(
    logits: Tensor, targets: Tensor, target_weights: Tensor | None, *, smoothing: float,
    prior: Tensor | None, weight: Tensor | None, ignore_index: int, inplace_backward: bool,
    chunk_size: int | None, divisor: Tensor | float | None,
) -> Tensor:
    """The chunked kernel on non-empty logits; arguments as
    :func:`labelsmooth.kernels.index_cross_entropy_rows`."""
    precompute = torch.is_grad_enabled() and logits.requires_grad and not inplace_backward
    loss: Tensor = ChunkedIndexCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
        bool(inplace_backward), chunk_size, divisor, precompute,
    )
    return loss

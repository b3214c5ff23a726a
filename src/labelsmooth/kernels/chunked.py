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

A softcap ``k`` computes each chunk on ``k tanh(x / k)`` in a chunk-sized
scratch buffer (and keeps ``tanh`` in a second one for the chain rule, when
the chunk's gradient is written); a z-loss adds ``2 zeta v lse`` to the scale
of ``softmax`` and saves ``lse`` per row.

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
from labelsmooth._smoothing import smoothing_distribution
from labelsmooth.kernels.rowmath import (
    Layout,
    component_loss_gradient,
    forward_arguments,
    forward_outputs,
    gradient_scales,
    input_gradients,
    keep_component_loss,
    per_row,
    row_terms,
    unit_rows,
    with_z_loss_gradient,
    z_loss_scale,
)

__all__ = [
    "ChunkedIndexCrossEntropy", "Scales", "chunked_cross_entropy_rows", "recomputed_gradient",
    "rows_per_chunk",
]

#: Elements per chunk (8 MiB of float32): small enough that a chunk stays in
#: the last-level cache between the passes over it (one read from memory per
#: element), large enough that the chunks, each a few parallel regions of their
#: own, stay few.
DEFAULT_CHUNK_ELEMENTS = 1 << 21


def rows_per_chunk(layout: Layout, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about ``DEFAULT_CHUNK_ELEMENTS`` elements."""
    if chunk_size is not None:
        return chunk_size
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, layout.num_classes * (layout.spatial or 1)))


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
            vector = smoothing_distribution(layout.num_classes, None, dtype=log_p.dtype, device=log_p.device)
        torch.matmul(vector, log_p, out=out[:, 0])


Scales = tuple[Tensor, Tensor, Tensor, Tensor, "Tensor | None"]


def _softmax_to_gradient_(out: Tensor, scales: Scales, start: int, stop: int,
                          scale_p: Tensor | None = None) -> None:
    """``out = scale_p p - scale_u cm + scale_y onehot`` for rows ``start:stop``; ``out`` holds ``p``.

    ``scale_p`` (the chunk's own rows) replaces ``scales[0]`` when given."""
    own_p, scale_u, scale_y, index = (part[start:stop] for part in scales[:4])
    class_column = scales[4]
    out.mul_(own_p if scale_p is None else scale_p)
    if class_column is None:
        # Two in-place passes over the cached chunk: cheaper than one
        # broadcasting addcmul with a constant.
        out.sub_(scale_u)
    else:
        out.addcmul_(scale_u, class_column, value=-1)
    out.scatter_add_(1, index, scale_y.to(out.dtype))


class _Work:
    """The chunk-sized scratch buffers of a pass that writes the gradient, and the chunk as
    the math sees it: in compute dtype and capped, with ``tanh`` kept for the chain rule."""

    def __init__(self, logits: Tensor, rows: int, dtype: torch.dtype, softcap: float | None) -> None:
        shape = (rows, *logits.shape[1:])
        self.softcap = softcap
        need = logits.dtype != dtype or softcap is not None
        self.work = torch.empty(shape, dtype=dtype, device=logits.device) if need else None
        self.tanh = None if softcap is None else torch.empty(shape, dtype=dtype, device=logits.device)

    def chunk(self, raw: Tensor, rows: int) -> tuple[Tensor, Tensor | None]:
        """``(z, tanh(raw / k) or None)``: ``raw`` itself, or its capped or float32 copy."""
        if self.work is None:
            return raw, None
        work = self.work[:rows]
        if self.tanh is None or self.softcap is None:
            return work.copy_(raw), None
        tanh = self.tanh[:rows].copy_(raw).div_(self.softcap).tanh_()
        return torch.mul(tanh, self.softcap, out=work), tanh


def _through_cap_(grad: Tensor, tanh: Tensor | None) -> None:
    """The chain rule through ``k tanh(x / k)``, in place: ``grad *= 1 - tanh^2``."""
    if tanh is not None:
        grad.mul_(tanh.square_().neg_().add_(1))


class ChunkedIndexCrossEntropy(torch.autograd.Function):
    """Autograd function behind :func:`index_cross_entropy_rows`: the per-row loss, or its
    scaled sum; with a z-loss ``(loss, z-loss part)`` as
    :class:`~labelsmooth.kernels.fused.FusedIndexCrossEntropy`."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, target_weights: Tensor | None,
        smoothing: float, prior: Tensor | None, weight: Tensor | None, ignore_index: int,
        divisor: Tensor | float | None, z_loss: float, z_divisor: Tensor | float | None,
        softcap: float | None, inplace_backward: bool, chunk_size: int | None, precompute: bool,
    ) -> Tensor | tuple[Tensor, Tensor]:
        layout = Layout(logits.shape)
        dtype = compute_dtype(logits.dtype)
        z_divisor = divisor if z_divisor is None else z_divisor
        terms = row_terms(
            targets, target_weights, layout.num_classes, smoothing=smoothing, prior=prior,
            weight=weight, ignore_index=ignore_index, z_loss=z_loss, dtype=dtype, device=logits.device,
        )
        index, tw, coef_a, smooth_mass, cm, z_mask = (
            terms.target_index, terms.tw, terms.coef_a, terms.smooth_mass, terms.cm, terms.z_mask
        )
        step = rows_per_chunk(layout, chunk_size)
        ctx.layout, ctx.step, ctx.dtype = layout, step, dtype
        ctx.softcap, ctx.smooth = softcap, smoothing != 0.0
        stats = _Statistics(layout, index, dtype, logits.device, lse=z_mask is not None)
        grad = None
        if precompute:
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
            unit = unit_rows(divisor, coef_a)
            scales = _gradient_scales(layout, unit, coef_a, smooth_mass, tw, index, cm)
            scale_z = None if z_mask is None else z_loss_scale(layout, unit_rows(z_divisor, coef_a),
                                                                z_loss, z_mask)
            _forward_with_gradient(ctx, logits, grad, stats, scales, scale_z, cm)
        else:
            _forward_statistics(ctx, logits, stats, cm)
        loss, lse, nll_y, nll_smooth = stats.losses(tw, smooth_mass, terms.mass_sum)
        ctx.save_for_backward(logits, index, tw, coef_a, smooth_mass, cm, lse, z_mask)
        ctx.inplace_backward = inplace_backward
        ctx.divisor, ctx.z_divisor, ctx.z_loss = divisor, z_divisor, z_loss
        ctx.grad = grad
        keep_component_loss(ctx, targets, target_weights, ignore_index, tw, nll_y, smoothing * nll_smooth)
        return forward_outputs(ctx, loss, lse, z_mask, z_loss, divisor, z_divisor)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor | None, grad_z: Tensor | None = None
    ) -> tuple[Tensor | None, ...]:
        logits, index, tw, coef_a, smooth_mass, cm, lse, z_mask = ctx.saved_tensors
        layout, dtype = ctx.layout, ctx.dtype
        grad_out = coef_a.new_zeros(()) if grad_out is None else grad_out.to(dtype)
        grad_loss = per_row(grad_out, ctx.divisor, coef_a)
        grad_mixing = component_loss_gradient(ctx, grad_loss)
        grad, ctx.grad = ctx.grad, None
        if not ctx.needs_input_grad[0]:
            return input_gradients(_INPUTS, target_weights=grad_mixing)
        if grad is not None and grad_z is None:
            # Computed in the forward for an incoming gradient of 1: scale it
            # and let go, so autograd adopts it as .grad without a copy.
            if ctx.divisor is None:
                grad.mul_(layout.view(grad_out))
            elif not bool(grad_out == 1):
                grad.mul_(grad_out)
            return input_gradients(_INPUTS, logits=grad, target_weights=grad_mixing)
        # No gradient from the forward (in place, a second backward through a
        # retained graph, or a gradient for the z-loss part): recompute softmax
        # chunk by chunk into the gradient.
        scales = _gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, index, cm)
        if z_mask is not None:
            scale_p = with_z_loss_gradient(layout, scales[0], lse, grad_out, grad_z, ctx.z_divisor,
                                           ctx.z_loss, z_mask)
            scales = (scale_p, *scales[1:])
        grad = recomputed_gradient(logits, scales, dtype=dtype, softcap=ctx.softcap, step=ctx.step,
                                   inplace=ctx.inplace_backward)
        return input_gradients(_INPUTS, logits=grad, target_weights=grad_mixing)


#: The forward's argument names, for the backward's :func:`~labelsmooth.kernels.rowmath.input_gradients`.
_INPUTS = forward_arguments(ChunkedIndexCrossEntropy)


class _Statistics:
    """Per-row numbers gathered over the chunks: ``lse``, and ``-log p`` at the targets and
    the smoothing term, or (when the gradient is written) ``z`` at the targets and ``z . cm``."""

    def __init__(self, layout: Layout, index: Tensor, dtype: torch.dtype, device: torch.device, *,
                 lse: bool) -> None:
        self.layout = layout
        self.index = layout.view(index)
        self.target = layout.view(torch.empty(index.shape, dtype=dtype, device=device))
        self.smooth = layout.view(torch.zeros(layout.positions, dtype=dtype, device=device))
        self.lse: Tensor | None = None
        if lse:
            self.lse_buffer()
        #: ``target`` and ``smooth`` hold logits (not -log p) until :meth:`losses`.
        self.raw = False

    def lse_buffer(self) -> Tensor:
        """``lse`` per row, viewed against the logits (allocated on first use)."""
        if self.lse is None:
            self.lse = self.layout.view(torch.empty(self.layout.positions, dtype=self.smooth.dtype,
                                                    device=self.smooth.device))
        return self.lse

    def losses(self, tw: Tensor, smooth_mass: Tensor, mass_sum: Tensor | float
               ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """``(loss (M,), lse (M,) or None, -log p at the targets (M, K), smoothing term (M,))``."""
        nll_y = self.layout.flat(self.target)
        nll_smooth = self.layout.flat(self.smooth).reshape(-1)
        lse = None if self.lse is None else self.layout.flat(self.lse).reshape(-1)
        if self.raw and lse is not None:
            nll_y = lse[:, None] - nll_y
            nll_smooth = lse * mass_sum - nll_smooth
        return (tw * nll_y).sum(1) + smooth_mass * nll_smooth, lse, nll_y, nll_smooth


def _forward_statistics(ctx: Any, logits: Tensor, stats: _Statistics, cm: Tensor | None) -> None:
    """No gradient to write: one fused ``log_softmax`` per chunk into a scratch buffer."""
    layout, step = ctx.layout, ctx.step
    rows = layout.batch
    scratch = torch.empty((min(step, rows), *logits.shape[1:]), dtype=ctx.dtype, device=logits.device)
    lse = stats.lse
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        part, out = slice(start, stop), scratch[: stop - start]
        chunk = logits[part]
        # A 16-bit or capped chunk is computed in the scratch buffer, read from
        # memory once; its log-softmax then overwrites it in place.
        if chunk.dtype != ctx.dtype or ctx.softcap is not None:
            chunk = out.copy_(chunk)
        if ctx.softcap is not None:
            chunk.div_(ctx.softcap).tanh_().mul_(ctx.softcap)
        row_max = None if lse is None else chunk.amax(1, keepdim=True)
        # One fused pass per row (max, sum of exp, write); the chunk stays
        # in cache for the rest.
        log_p = torch.log_softmax(chunk, 1, out=out)
        stats.target[part] = torch.gather(log_p, 1, stats.index[part]).neg_()
        if ctx.smooth:
            _weighted_class_sum(layout, log_p, cm, stats.smooth[part])
            stats.smooth[part].neg_()
        if lse is not None and row_max is not None:
            # lse = max z - max log p, both exact: max log p is in [-log C, 0].
            lse[part] = row_max.sub_(log_p.amax(1, keepdim=True))


def _forward_with_gradient(
    ctx: Any, logits: Tensor, grad: Tensor, stats: _Statistics, scales: Scales,
    scale_z: Tensor | None, cm: Tensor | None,
) -> None:
    """The gradient for an incoming gradient of 1 (per row, or of the sum / divisor), written in
    the forward's pass over each chunk: one exp per element in all, none in the backward."""
    layout, step = ctx.layout, ctx.step
    rows = layout.batch
    work = _Work(logits, min(step, rows), ctx.dtype, ctx.softcap)
    stats.raw = True
    lse_rows = stats.lse_buffer()
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        part = slice(start, stop)
        out, raw = grad[part], logits[part]
        chunk, tanh = work.chunk(raw, stop - start)
        # z at the targets and sum_c cm_c z_c while the chunk is in cache,
        # then softmax in one fused pass (in place over a scratch chunk):
        # lse = max z - log max p, as max p = 1 / sum exp(z - max z).
        p = out if chunk is raw else chunk
        if p is out:
            torch.softmax(chunk, 1, out=p)
        stats.target[part] = torch.gather(chunk, 1, stats.index[part])
        if ctx.smooth:
            _weighted_class_sum(layout, chunk, cm, stats.smooth[part])
        row_max = chunk.amax(1, keepdim=True)
        if p is not out:
            torch.softmax(chunk, 1, out=p)
        lse = lse_rows[part]
        lse.copy_(row_max.sub_(p.amax(1, keepdim=True).log_()))
        scale_p = None if scale_z is None else scales[0][part] + scale_z[part] * lse
        _softmax_to_gradient_(p, scales, start, stop, scale_p)
        _through_cap_(p, tanh)
        if p is not out:
            out.copy_(p)


def recomputed_gradient(logits: Tensor, scales: Scales, *, dtype: torch.dtype, softcap: float | None,
                        step: int, inplace: bool = False) -> Tensor:
    """``scale_p softmax(z) - scale_u cm + scale_y onehot`` (through the cap), recomputed
    ``step`` rows at a time: the gradient in the logits' shape and dtype (over the logits'
    own storage with ``inplace``); ``dtype`` is the compute dtype."""
    layout = Layout(logits.shape)
    # In place: a plain alias of the storage, as autograd must not see the
    # logits (a leaf, possibly) handed back as their own gradient.
    grad = logits.detach() if inplace else torch.empty_like(logits, memory_format=torch.contiguous_format)
    work = _Work(logits, min(step, layout.batch), dtype, softcap)
    for start in range(0, layout.batch, step):
        stop = min(start + step, layout.batch)
        out = grad[start:stop]
        # Recomputed in one fused pass per row (precise as PyTorch's own);
        # each row is read before its (possibly aliased) gradient is written.
        # 16-bit or capped logits: computed in a float32 scratch chunk and
        # rounded once, as the forward does it.
        raw = logits[start:stop]
        chunk, tanh = work.chunk(raw, stop - start)
        p = out if chunk is raw else chunk
        torch.softmax(chunk, 1, out=p)
        _softmax_to_gradient_(p, scales, start, stop)
        _through_cap_(p, tanh)
        if p is not out:
            out.copy_(p)
    return grad


def _gradient_scales(
    layout: Layout, grad_loss: Tensor, coef_a: Tensor, smooth_mass: Tensor, tw: Tensor,
    index: Tensor, cm: Tensor | None,
) -> Scales:
    """:func:`~labelsmooth.kernels.rowmath.gradient_scales`, the index viewed against a chunk,
    and ``cm`` as a class column."""
    scale_p, scale_u, scale_y = gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, cm)
    return scale_p, scale_u, scale_y, layout.view(index), layout.class_column(cm)


def chunked_cross_entropy_rows(
    logits: Tensor, targets: Tensor, target_weights: Tensor | None, smoothing: float,
    prior: Tensor | None, weight: Tensor | None, ignore_index: int, divisor: Tensor | float | None,
    z_loss: float, z_divisor: Tensor | float | None, softcap: float | None, *,
    inplace_backward: bool, chunk_size: int | None,
) -> Any:
    """The chunked kernel on non-empty logits; arguments as
    :func:`labelsmooth.kernels.index_cross_entropy_rows`."""
    precompute = torch.is_grad_enabled() and logits.requires_grad and not inplace_backward
    return ChunkedIndexCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
        divisor, z_loss, z_divisor, softcap, bool(inplace_backward), chunk_size, precompute,
    )

"""The row-chunked kernel: smoothed cross-entropy that keeps O(M) statistics, not a log-softmax.

Same loss as :mod:`labelsmooth.kernels.reference` (see its module docstring).
Write ``s`` for the smoothing mass, ``cm_c = u_c w_c`` for the class mass of
the smoothing term, ``S = sum_c cm_c``, ``mass_ik = lam_ik [y_ik valid]`` and
``m_i = sum_k mass_ik``. Then per row::

    loss_i = A_i * lse_i - (1 - s) sum_k mass_ik w_{y_ik} z_{y_ik} - s m_i (z_i . cm)
    A_i    = (1 - s) sum_k mass_ik w_{y_ik} + s m_i S
    dloss_i / dz_ic = A_i softmax(z_i)_c - (1 - s) sum_k mass_ik w_{y_ik} [c = y_ik] - s m_i cm_c

so the loss needs only ``lse`` (or ``-log p``) at the targets and one
weighted row sum, and the gradient only ``softmax`` and per-row scalars.
The rows are walked in chunks, each read from memory once (every further pass
over it hits the cache). When the logits need a gradient, the forward runs
one fused ``softmax`` per chunk straight into the gradient buffer, takes
``lse = max z - log max p`` and the row sums from the cached chunk, and turns
the softmax into the gradient for an incoming gradient of 1 in place (one
``exp`` per element in all, as Liger-Kernel does it); the backward only
scales it. Otherwise (no gradient, or ``inplace_backward``) the forward runs
one fused ``log_softmax`` per chunk into a reused scratch buffer and keeps
O(M) numbers, and a backward recomputes ``softmax`` chunk by chunk into the
gradient. The only ``(M, C)`` buffer ever allocated is the gradient itself,
and with ``inplace_backward=True`` not even that: the gradient overwrites the
logits during the backward.

Chunks are sized by element count. Every operation on a chunk is one
parallel region of the intra-op thread pool, so on a shared, oversubscribed
machine each costs a scheduler wait; fewer, L3-sized chunks keep that count
in the tens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth.targets import compute_dtype

#: Elements per chunk: 2^21 (8 MiB of float32 logits, and as much gradient,
#: together within the 32 MiB L3). Measured fwd+bwd (gradient written in the
#: forward) at (4096, 32000) float32 on the 2-core benchmark machine, load ~1.5:
#: 2^20 0.196 s, 2^21 0.194 s, 2^22 0.206 s; bfloat16 0.155 / 0.151 / 0.151 s;
#: (2048, 128256) float32 0.392 / 0.386 / 0.393 s. Every operation on a chunk
#: is a parallel region of the thread pool, and under load from other processes
#: each waits for a descheduled thread, so chunks are not made smaller (the
#: earlier log-softmax kernel at load ~4.5: 2^18 5.2 s, 2^21 1.8 s, 2^23 1.2 s).
DEFAULT_CHUNK_ELEMENTS = 1 << 21


def rows_per_chunk(num_classes: int, chunk_size: int | None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about ``DEFAULT_CHUNK_ELEMENTS`` elements."""
    if chunk_size is not None:
        return chunk_size
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, num_classes))


def class_mass(
    num_classes: int, prior: Tensor | None, weight: Tensor | None, *, dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """``cm = u * w`` (``u`` uniform or ``prior``), or ``None`` when it is the constant ``1 / C``."""
    if prior is None and weight is None:
        return None
    cm = (
        torch.full((num_classes,), 1.0 / num_classes, dtype=dtype, device=device)
        if prior is None
        else prior.to(dtype=dtype, device=device)
    )
    return cm if weight is None else cm * weight.to(dtype=dtype, device=device)


def row_coefficients(
    targets: Tensor, target_weights: Tensor | None, *, smoothing: float, weight: Tensor | None,
    ignore_index: int, mass_sum: Tensor | float, dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row target statistics: ``(index (M, K), tw (M, K), A (M,), s * m (M,))``.

    ``tw_ik = (1 - s) mass_ik w_{y_ik}`` is the one-hot coefficient of the
    gradient; ``mass_sum`` is ``S``. Ignored components point at class 0 with 0 mass.
    """
    index = targets.reshape(targets.shape[0], -1)
    valid = index != ignore_index
    index = torch.where(valid, index, 0)
    mass = valid.to(dtype)
    if target_weights is not None:
        mass = mass * target_weights.reshape(index.shape).to(dtype)
    smooth_mass = smoothing * mass.sum(1)
    tw = mass if weight is None else mass * weight.to(dtype)[index]
    tw = (1.0 - smoothing) * tw
    return index, tw, tw.sum(1) + smooth_mass * mass_sum, smooth_mass


class _Layout:
    """Positions of ``(M, C)`` logits (``S = None``) or of ``(B, C, S)`` logits, ``M = B S``.

    Per-position tensors are computed flat, ``(M,)`` or ``(M, K)`` in ``(B, S)``
    order; :meth:`view` shapes them to broadcast against a logits chunk along
    the class dimension 1: ``(M, 1)``/``(M, K)`` or ``(B, 1, S)``/``(B, K, S)``.
    """

    def __init__(self, logits: Tensor) -> None:
        self.batch, self.num_classes = logits.shape[0], logits.shape[1]
        self.spatial = logits.shape[2] if logits.dim() == 3 else None
        self.positions = self.batch * (self.spatial or 1)

    def view(self, flat: Tensor) -> Tensor:
        columns = flat.reshape(self.positions, -1)
        if self.spatial is None:
            return columns
        return columns.reshape(self.batch, self.spatial, -1).transpose(1, 2)

    def flat(self, viewed: Tensor) -> Tensor:
        """Inverse of :meth:`view` for ``(M, K)`` tensors."""
        if self.spatial is None:
            return viewed
        return viewed.transpose(1, 2).reshape(self.positions, -1)

    def weighted_class_sum(self, log_p: Tensor, vector: Tensor | None, out: Tensor) -> None:
        """``out = sum_c vector_c log_p[:, c]``; ``vector=None`` means uniform ``1 / C``."""
        if self.spatial is None:
            if vector is None:
                # Measured on a (131, 32000) chunk at low load: a row sum
                # 0.1 ms, the matrix-vector product 0.4 ms.
                torch.sum(log_p, 1, out=out[:, 0])
                out.div_(self.num_classes)
            else:
                torch.mv(log_p, vector, out=out[:, 0])
        else:
            # (C,) @ (n, C, S): a batched BLAS product (einsum measured 40x slower).
            if vector is None:
                vector = torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=log_p.dtype,
                                    device=log_p.device)
            torch.matmul(vector, log_p, out=out[:, 0])


Scales = tuple[Tensor, Tensor, Tensor, Tensor, "Tensor | None"]


def _softmax_to_gradient_(out: Tensor, scales: Scales, start: int, stop: int) -> None:
    """``out = scale_p p - scale_u cm + scale_y onehot`` for rows ``start:stop``; ``out`` holds ``p``."""
    scale_p, scale_u, scale_y, index = (part[start:stop] for part in scales[:4])
    class_column = scales[4]
    out.mul_(scale_p)
    if class_column is None:
        # Two in-place passes over the cached chunk: 0.2 ms on (131, 32000)
        # float32, where one broadcasting addcmul took 1.2 ms.
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
        layout = _Layout(logits)
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
                    layout.weighted_class_sum(log_p, cm, nll_smooth[start:stop])
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
                layout.weighted_class_sum(chunk, cm, nll_smooth[start:stop])
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
    layout: _Layout, grad_loss: Tensor, coef_a: Tensor, smooth_mass: Tensor, tw: Tensor,
    index: Tensor, cm: Tensor | None,
) -> Scales:
    """``(scale_p, scale_u, scale_y, index)`` viewed against a chunk, and ``cm`` as a class column.

    For the gradient ``grad_loss_i dloss_i / dz_i`` (see the module docstring).
    """
    scale_p = grad_loss * coef_a
    scale_u = grad_loss * smooth_mass
    if cm is None:
        scale_u = scale_u / layout.num_classes
    scale_y = -(grad_loss[:, None] * tw)
    class_column = None if cm is None else cm.reshape(-1, *([1] * (layout.spatial is not None)))
    return (layout.view(scale_p), layout.view(scale_u), layout.view(scale_y), layout.view(index),
            class_column)


def index_cross_entropy_rows(
    logits: Tensor,
    targets: Tensor,
    target_weights: Tensor | None = None,
    *,
    smoothing: float,
    prior: Tensor | None,
    weight: Tensor | None,
    ignore_index: int,
    inplace_backward: bool = False,
    chunk_size: int | None = None,
    divisor: Tensor | float | None = None,
) -> Tensor:
    """Per-row smoothed cross-entropy in row chunks; no ``(M, C)`` buffer but the gradient.

    When the logits need a gradient (grad mode on, ``logits.requires_grad``,
    no ``inplace_backward``), the forward also writes it, in the same pass
    over each chunk, for an incoming gradient of 1; the backward only scales
    it by the incoming gradient (nothing at all for a sum with incoming
    gradient 1) and hands it over. The gradient buffer therefore exists from
    the forward on, for as long as the graph does. A second backward through a
    retained graph recomputes it. Without a gradient the forward keeps O(M) numbers.

    Args:
        logits: ``(M, C)``, or ``(B, C, S)`` with the classes on dimension 1
            and ``M = B * S`` positions in ``(B, S)`` order (segmentation maps,
            chunked in their own layout, no class-last copy). Any floating
            dtype. 16-bit logits: the loss and the gradient are computed in
            float32 (a float32 copy of each chunk); the gradient is rounded
            once to the logits' dtype.
        targets: ``(M,)`` or ``(M, K)`` int64 class indices or ``ignore_index``.
        target_weights: ``(M, K)`` mixing weights ``lam``; ``None`` means 1.
        smoothing: ``s`` (may exceed 1 after the "others" conversion).
        prior: ``(C,)`` smoothing distribution, ``None`` for uniform.
        weight: ``(C,)`` class weights or ``None``. Treated as constants: when
            ``weight`` or ``prior`` requires grad, the reference kernel runs instead.
        ignore_index: index value that contributes nothing.
        inplace_backward: write the gradient over ``logits``' storage instead of
            allocating one. Hazard: after backward the logits hold the gradient,
            so anything that reads them later (a metric, another loss, a second
            backward through ``retain_graph``) sees wrong values. Autograd's
            version counter catches other nodes that saved these logits, but
            not plain reads. Use it only when the logits are dead after the loss.
        chunk_size: rows (``B`` entries for ``(B, C, S)`` logits) per chunk;
            default about 2^22 elements.
        divisor: ``None`` to return the row losses; else a float or a 0-dim
            tensor (no gradient) to return ``sum_i loss_i / divisor`` (the
            ``"sum"`` and ``"mean"`` reductions), whose gradient for an
            incoming gradient of 1 then needs no pass in the backward.

    Returns:
        ``(M,)`` losses, or their sum over ``divisor``, in the compute dtype.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> loss = index_cross_entropy_rows(
        ...     logits, torch.tensor([0]), smoothing=0.1, prior=None, weight=None, ignore_index=-100)
        >>> round(loss.item(), 4)
        0.3729
    """
    if (weight is not None and weight.requires_grad) or (prior is not None and prior.requires_grad):
        from labelsmooth.kernels import reference

        rows_2d = logits.movedim(1, -1).reshape(-1, logits.shape[1]) if logits.dim() == 3 else logits
        rows = reference.index_cross_entropy_rows(
            rows_2d, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
            ignore_index=ignore_index,
        )
        return rows if divisor is None else rows.sum() / divisor
    if logits.numel() == 0:
        # Nothing to chunk; keep the graph so backward gives an empty gradient.
        rows = logits.sum(1).reshape(-1).to(compute_dtype(logits.dtype))
        return rows if divisor is None else rows.sum() / divisor
    precompute = torch.is_grad_enabled() and logits.requires_grad and not inplace_backward
    loss: Tensor = ChunkedIndexCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
        bool(inplace_backward), chunk_size, divisor, precompute,
    )
    return loss

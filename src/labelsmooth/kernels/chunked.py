"""The row-chunked kernel: smoothed cross-entropy that keeps O(M) statistics, not a log-softmax.

Same loss as :mod:`labelsmooth.kernels.reference` (see its module docstring).
Write ``s`` for the smoothing mass, ``cm_c = u_c w_c`` for the class mass of
the smoothing term, ``S = sum_c cm_c``, ``mass_ik = lam_ik [y_ik valid]`` and
``m_i = sum_k mass_ik``. Then per row::

    loss_i = A_i * lse_i - (1 - s) sum_k mass_ik w_{y_ik} z_{y_ik} - s m_i (z_i . cm)
    A_i    = (1 - s) sum_k mass_ik w_{y_ik} + s m_i S
    dloss_i / dz_ic = A_i softmax(z_i)_c - (1 - s) sum_k mass_ik w_{y_ik} [c = y_ik] - s m_i cm_c

so the loss needs only ``-log p`` at the targets and one weighted row sum,
and the gradient only ``softmax`` and per-row scalars. The forward walks the
rows in chunks and runs one fused ``log_softmax`` per chunk into a reused
scratch buffer (the chunk is read from memory once, every further pass over it
hits the cache); it keeps O(M) numbers. The backward recomputes ``softmax`` chunk
by chunk straight into the gradient and adds the per-row terms in place.
The only ``(M, C)`` buffer ever allocated is the gradient itself, and with
``inplace_backward=True`` not even that: the gradient overwrites the logits.

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

#: Elements per chunk: 2^22 (16 MiB of float32 scratch, half the 32 MiB L3).
#: Measured fwd+bwd at (4096, 32000) on the 2-core benchmark machine. Under
#: load from other processes (load average ~4.5): 2^18-element (L2-sized)
#: chunks 5.2 s, 2^21 1.8 s, 2^23 1.2 s, PyTorch 2.0 s; every operation on a
#: chunk is a parallel region of the thread pool, and each waits for a
#: descheduled thread. At load ~1.5: float32 2^20 to 2^23 within 5% of each
#: other (0.31-0.37 s, PyTorch 0.69 s); bfloat16 2^22 0.36 s but 2^23 0.64 s
#: (the float32 copy of a 2^23 chunk no longer stays in cache).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


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


class ChunkedIndexCrossEntropy(torch.autograd.Function):
    """Autograd function behind :func:`index_cross_entropy_rows`; returns the per-row loss."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, target_weights: Tensor | None,
        smoothing: float, prior: Tensor | None, weight: Tensor | None, ignore_index: int,
        inplace_backward: bool, chunk_size: int | None,
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
        work = torch.empty((min(step, rows), *logits.shape[1:]), dtype=dtype, device=logits.device)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            log_p = work[: stop - start]
            # One fused pass per row (max, sum of exp, write); the chunk stays
            # in cache for the rest. 16-bit logits are first copied into the
            # float32 scratch (log_softmax(dtype=) would allocate a copy per chunk).
            if logits.dtype == dtype:
                torch.log_softmax(logits[start:stop], 1, out=log_p)
            else:
                log_p.copy_(logits[start:stop])
                torch.log_softmax(log_p, 1, out=log_p)
            nll_y[start:stop] = torch.gather(log_p, 1, index_view[start:stop])
            if smoothing != 0.0:
                layout.weighted_class_sum(log_p, cm, nll_smooth[start:stop])
        nll_y = layout.flat(nll_y).neg()
        nll_smooth = layout.flat(nll_smooth).reshape(-1).neg()
        loss = (tw * nll_y).sum(1) + smooth_mass * nll_smooth
        ctx.save_for_backward(logits, index, tw, coef_a, smooth_mass, cm)
        ctx.layout = layout
        ctx.inplace_backward = inplace_backward
        ctx.step = step
        ctx.component_loss = None
        if target_weights is not None and ctx.needs_input_grad[2]:
            # d loss_i / d lam_ik, for callers that learn mixing weights.
            valid = (targets.reshape(index.shape) != ignore_index).to(dtype)
            per_mass = tw / torch.where(valid > 0, target_weights.reshape(index.shape).to(dtype), 1.0)
            ctx.target_weights_shape = target_weights.shape
            ctx.component_loss = valid * (per_mass * nll_y + smoothing * nll_smooth[:, None])
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        logits, index, tw, coef_a, smooth_mass, cm = ctx.saved_tensors
        grads: list[Tensor | None] = [None] * 9
        if ctx.component_loss is not None:
            grads[2] = (grad_loss[:, None] * ctx.component_loss).reshape(ctx.target_weights_shape)
        if not ctx.needs_input_grad[0]:
            return tuple(grads)
        layout = ctx.layout
        rows, num_classes = layout.batch, layout.num_classes
        dtype = coef_a.dtype
        grad_loss = grad_loss.to(dtype)
        scale_p = grad_loss * coef_a
        scale_u = grad_loss * smooth_mass
        scale_y = -(grad_loss[:, None] * tw)
        if cm is None:
            scale_u = scale_u / num_classes
        scale_p, scale_u, scale_y = layout.view(scale_p), layout.view(scale_u), layout.view(scale_y)
        index = layout.view(index)
        class_column = None if cm is None else cm.reshape(num_classes, *([1] * (logits.dim() - 2)))
        if ctx.inplace_backward:
            # A plain alias of the storage: autograd must not see the logits
            # (a leaf, possibly) handed back as their own gradient.
            grad = logits.detach()
        else:
            grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        step = ctx.step
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            out = grad[start:stop]
            # Recomputed in one fused pass per row (precise as PyTorch's own);
            # each row is read before its (possibly aliased) gradient is written.
            # 16-bit logits: the kernels accumulate in float32 and round each
            # gradient entry to the logits' dtype (no float32 copy of the chunk).
            torch.softmax(logits[start:stop], 1, out=out)
            if class_column is None:
                # out = scale_p * p - scale_u in one pass.
                torch.addcmul(-scale_u[start:stop], out, scale_p[start:stop], out=out)
            else:
                out.mul_(scale_p[start:stop])
                out.addcmul_(scale_u[start:stop], class_column, value=-1)
            out.scatter_add_(1, index[start:stop], scale_y[start:stop].to(out.dtype))
        grads[0] = grad
        return tuple(grads)


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
) -> Tensor:
    """Per-row smoothed cross-entropy in row chunks; no ``(M, C)`` buffer but the gradient.

    Args:
        logits: ``(M, C)``, or ``(B, C, S)`` with the classes on dimension 1
            and ``M = B * S`` positions in ``(B, S)`` order (segmentation maps,
            chunked in their own layout, no class-last copy). Any floating
            dtype. 16-bit logits: the loss is computed in float32; the
            gradient is written in the logits' dtype (softmax with float32
            sums, rounded to 16 bits, then the per-row terms added in place).
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

    Returns:
        ``(M,)`` losses in the compute dtype.

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
        return reference.index_cross_entropy_rows(
            rows_2d, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
            ignore_index=ignore_index,
        )
    if logits.numel() == 0:
        # Nothing to chunk; keep the graph so backward gives an empty gradient.
        return logits.sum(1).reshape(-1).to(compute_dtype(logits.dtype))
    loss: Tensor = ChunkedIndexCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
        bool(inplace_backward), chunk_size,
    )
    return loss

"""The output projection fused with smoothed cross-entropy: logits exist one row chunk at a time.

For hidden states ``h`` ``(N, H)``, a projection ``W`` ``(V, H)`` and bias
``b`` ``(V,)``, row ``i`` has logits ``z_i = W h_i + b``. With the smoothing
mass ``s`` (uniform over the ``V`` classes)::

    loss_i  = lse(z_i) - (1 - s) z_{i, y_i} - s mean(z_i)
    dz_i    = c_i (softmax(z_i) - (1 - s) onehot(y_i) - s / V)
    dh_i    = dz_i W,   dW = sum_i dz_i^T h_i,   db = sum_i dz_i

where ``c_i`` is the reduction's weight of row ``i`` (``1``, or ``1 / count``
for ``"mean"``; 0 for ignored rows). Per chunk, one matrix product makes the
logits and one pass of :func:`labelsmooth.kernels.rowmath.fused_rows` (the
compiled kernel of :mod:`labelsmooth.kernels.dispatch`) turns them into the
row statistics and ``dz``. For ``"mean"`` and ``"sum"`` the gradients are
computed inside the forward's chunk loop and the backward only scales them by
the incoming gradient (the trick of Liger-Kernel's fused linear
cross-entropy). With ``"none"`` the per-row incoming gradient is unknown in
the forward, so the backward recomputes each chunk's logits (one more
projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch

#: Logit elements per chunk: 3 * 2^21 float32 (24 MiB; 196 rows at V=32000).
#: The peak is dW, dh and one chunk (plus BLAS packing buffers), and each chunk
#: adds a read-modify-write pass over the (V, H) weight gradient. Measured at
#: (4096, 1024, 32000) float32 on the 2-core benchmark machine, fwd+bwd time
#: over linear-then-cross-entropy and peak RSS growth: 131 rows 1.19x, 198 MiB;
#: 196 rows 1.06x, 220 MiB; 262 rows 1.0x, 276-308 MiB (baseline: 1510 MiB).
DEFAULT_CHUNK_ELEMENTS = 3 << 21
MIN_CHUNK_ROWS = 128


def _chunk(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, index: Tensor, coef: Tensor | None, *,
    smoothing: float,
) -> tuple[Tensor | None, Tensor]:
    """One chunk: ``(dz (n, V) for row weights coef, or None; unreduced loss (n,))``."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    dtype = compute_dtype(logits.dtype)
    index = index[:, None]
    if coef is None:
        row_max, exp_sum, sum_z, z_y = dispatch.compiled("row_statistics")(logits, index, None, dtype)
        grad = None
    else:
        scales = (coef[:, None], (coef * (smoothing / logits.shape[1]))[:, None],
                  (-(1.0 - smoothing) * coef)[:, None])
        grad, row_max, exp_sum, sum_z, z_y = dispatch.compiled("fused_rows")(
            logits.to(dtype), index, *scales, None
        )
    loss = row_max + exp_sum.log() - (1.0 - smoothing) * z_y - (smoothing / logits.shape[1]) * sum_z
    return grad, loss.squeeze(1)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Autograd function behind :func:`labelsmooth.linear_cross_entropy`: per-row loss or scalar."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
        smoothing: float, ignore_index: int, reduction: str, chunk_size: int | None,
    ) -> Tensor:
        rows, num_classes = hidden.shape[0], weight.shape[0]
        dtype = compute_dtype(hidden.dtype)
        valid = targets != ignore_index
        index = torch.where(valid, targets, 0)
        coef = valid.to(dtype)
        if reduction == "mean":
            count = coef.sum()
            coef = coef / torch.where(count > 0, count, torch.ones_like(count))
        step = chunk_size or max(MIN_CHUNK_ROWS, DEFAULT_CHUNK_ELEMENTS // max(1, num_classes))
        needs_grad = any(ctx.needs_input_grad[:3])
        fused = needs_grad and reduction != "none"
        grads = _GradientAccumulator(hidden, weight, bias, ctx.needs_input_grad) if fused else None
        losses = torch.empty(rows, dtype=dtype, device=hidden.device)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            part = slice(start, stop)
            grad_logits, losses[part] = _chunk(
                hidden[part], weight, bias, index[part], None if grads is None else coef[part],
                smoothing=smoothing,
            )
            if grads is not None and grad_logits is not None:
                grads.add(part, grad_logits)
        row_weight = coef if reduction == "mean" else valid.to(dtype)
        losses = losses * row_weight
        ctx.smoothing, ctx.step = smoothing, step
        ctx.grads = grads
        if needs_grad:
            # Inputs only (no copies): for a backward that has to recompute.
            ctx.save_for_backward(hidden, weight, bias, index, row_weight)
        return losses if reduction == "none" else losses.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        if grads is not None:
            # Computed in the forward for an incoming gradient of 1: scale them
            # and let go, so autograd adopts them as .grad without a copy (a
            # reference kept here made it clone dW: +0.5x of it in peak memory).
            return (*grads.result(grad_loss), None, None, None, None, None)
        # "none", or a second backward through a retained graph: recompute.
        hidden, weight, bias, index, row_weight = ctx.saved_tensors
        dtype = row_weight.dtype
        coef = grad_loss.to(dtype) * row_weight
        recomputed = _GradientAccumulator(hidden, weight, bias, ctx.needs_input_grad)
        for start in range(0, hidden.shape[0], ctx.step):
            part = slice(start, min(start + ctx.step, hidden.shape[0]))
            grad_logits, _ = _chunk(hidden[part], weight, bias, index[part], coef[part],
                                    smoothing=ctx.smoothing)
            if grad_logits is not None:
                recomputed.add(part, grad_logits)
        return (*recomputed.result(None), None, None, None, None, None)


class _GradientAccumulator:
    """``dh`` row chunks, and ``dW``, ``db`` summed over chunks in the compute dtype."""

    def __init__(self, hidden: Tensor, weight: Tensor, bias: Tensor | None,
                 needs: tuple[bool, ...]) -> None:
        dtype = compute_dtype(hidden.dtype)
        self.hidden, self.weight = hidden, weight
        self.grad_hidden = torch.empty_like(hidden) if needs[0] else None
        self.grad_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if needs[1] else None
        self.grad_bias = (
            torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)
            if bias is not None and needs[2] else None
        )
        self.bias_dtype = None if bias is None else bias.dtype

    def add(self, part: slice, grad_logits: Tensor) -> None:
        if self.grad_hidden is not None:
            # dh in the hidden dtype, from a product in the weight's dtype.
            torch.mm(grad_logits.to(self.weight.dtype), self.weight, out=self.grad_hidden[part])
        if self.grad_weight is not None:
            hidden = self.hidden[part]
            self.grad_weight.addmm_(grad_logits.t(), hidden.to(self.grad_weight.dtype))
        if self.grad_bias is not None:
            self.grad_bias += grad_logits.sum(0)

    def result(self, scale: Tensor | None) -> list[Tensor | None]:
        """``(dh, dW, db)`` times ``scale``, in the inputs' dtypes.

        With ``scale`` 1 (a plain ``loss.backward()``) the stored tensors are
        handed out without a copy; they are never modified here.
        """
        # One host read of a scalar per step (CPU only: no device sync), to
        # skip three (V, H)-sized products.
        unit = scale is None or (v.may_read_host(scale.device) and bool(scale == 1))
        pairs = [
            (self.grad_hidden, self.hidden.dtype),
            (self.grad_weight, self.weight.dtype),
            (self.grad_bias, self.bias_dtype or self.weight.dtype),
        ]
        return [
            None if grad is None else (grad if unit or scale is None else grad * scale).to(dtype)
            for grad, dtype in pairs
        ]


def fused_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, *, bias: Tensor | None, smoothing: float,
    ignore_index: int, reduction: str, chunk_size: int | None,
) -> Tensor:
    """Kernel entry point on checked, flattened inputs.

    Args:
        hidden: ``(N, H)``.
        weight: ``(V, H)``, the hidden dtype.
        targets: ``(N,)`` int64 class indices or ``ignore_index``.
        bias: ``(V,)`` or ``None``.
        smoothing: uniform smoothing mass ``s``.
        ignore_index: index value that contributes nothing.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; the mean divides by the
            number of rows not ignored (0 when there are none).
        chunk_size: rows per chunk; default about 6.3M logits (at least 128 rows).

    Returns:
        ``(N,)`` losses, or a scalar, in the compute dtype.
    """
    loss: Tensor = LinearCrossEntropyFunction.apply(  # type: ignore[no-untyped-call]
        hidden, weight, bias, targets, float(smoothing), int(ignore_index), reduction, chunk_size,
    )
    return loss

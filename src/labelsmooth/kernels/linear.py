"""The output projection fused with smoothed cross-entropy: logits exist one row chunk at a time.

For hidden states ``h`` ``(N, H)``, a projection ``W`` ``(V, H)`` and bias
``b`` ``(V,)``, row ``i`` has logits ``z_i = W h_i + b`` (capped to
``k tanh(z_i / k)`` under a softcap ``k``). With the smoothing mass ``s``
(uniform over the ``V`` classes) and class weights ``w``, the row loss and its
gradient are :mod:`labelsmooth.kernels.rowmath`'s::

    loss_i  = A_i lse(z_i) - (1 - s) w_{y_i} z_{i, y_i} - s (z_i . w) / V  [+ zeta lse(z_i)^2]
    dz_i    = c_i dloss_i / dz_i,   dh_i = dz_i W,   dW = sum_i dz_i^T h_i,   db = sum_i dz_i

where ``c_i`` is the reduction's weight of row ``i`` (``1``, or ``1 / divisor``
for ``"mean"``; 0 for ignored rows). Per chunk, one matrix product makes the
logits and one pass of :func:`labelsmooth.kernels.rowmath.fused_rows` (the
compiled kernel of :mod:`labelsmooth.kernels.dispatch`, or plain torch on the
``"chunked"`` backend) turns them into the row statistics and ``dz``. For
``"mean"`` and ``"sum"`` the gradients are computed inside the forward's
chunk loop and the backward only scales them by the incoming gradient (the
trick of Liger-Kernel's fused linear cross-entropy). With ``"none"`` (or a
gradient for the z-loss part) the per-row incoming gradient is unknown in the
forward, so the backward recomputes each chunk's logits (one more projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch
from labelsmooth.kernels.linear_rows import LinearRows, backward_scales
from labelsmooth.kernels.rowmath import (
    forward_arguments,
    forward_outputs,
    input_gradients,
    unit_rows,
)

__all__ = ["LinearCrossEntropyFunction", "fused_linear_cross_entropy"]

#: Logit elements per chunk: 9 * 2^20 float32 (36 MiB; 294 rows at V=32000).
#: The peak is dW, dh and two chunk-sized buffers (the logits and their
#: gradient), and each chunk costs its three matrix products a fixed pass over
#: the (V, H) weight (read twice, its gradient read and written once): smaller
#: chunks save memory and cost time. At (4096 x 1024) @ (1024 x 32000) this
#: size holds the peak at 0.14x of unfused PyTorch's, under the 0.15x target,
#: where 196 rows took 7% more time (BENCHMARKS.md, "Chunk sizes").
DEFAULT_CHUNK_ELEMENTS = 9 << 20
MIN_CHUNK_ROWS = 128


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Autograd function behind :func:`labelsmooth.linear_cross_entropy`: per-row loss or
    scalar; with a z-loss ``(loss, z-loss part)``, both differentiable."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
        smoothing: float, prior: Tensor | None, class_weight: Tensor | None, ignore_index: int,
        divisor: Tensor | float | None, z_loss: float, z_divisor: Tensor | float | None,
        softcap: float | None, chunk_size: int | None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        rows, num_classes = hidden.shape[0], weight.shape[0]
        dtype = compute_dtype(hidden.dtype)
        z_divisor = divisor if z_divisor is None else z_divisor
        state = LinearRows(targets, num_classes, smoothing=smoothing, prior=prior, weight=class_weight,
                      ignore_index=ignore_index, z_loss=z_loss, softcap=softcap, dtype=dtype,
                      device=hidden.device)
        step = chunk_size or max(MIN_CHUNK_ROWS, DEFAULT_CHUNK_ELEMENTS // max(1, num_classes))
        fused = any(ctx.needs_input_grad[:3]) and divisor is not None
        grads = _GradientAccumulator(hidden, weight, bias, ctx.needs_input_grad) if fused else None
        scales = None
        if fused:
            unit = unit_rows(divisor, state.terms.coef_a)
            scales = state.scales(unit, unit_rows(z_divisor, state.terms.coef_a))
        losses = torch.empty(rows, dtype=dtype, device=hidden.device)
        lse = torch.empty(rows, dtype=dtype, device=hidden.device)
        for start in range(0, rows, step):
            part = slice(start, min(start + step, rows))
            grad_logits, losses[part], lse[part] = state.chunk(hidden, weight, bias, part, scales)
            if grads is not None and grad_logits is not None:
                grads.add(part, grad_logits)
            # Freed before the next chunk's logits exist: else the peak holds
            # three chunk-sized buffers (this gradient, the next logits and
            # their gradient) instead of two.
            del grad_logits
        ctx.state, ctx.step, ctx.grads = state, step, grads
        ctx.divisor, ctx.z_divisor = divisor, z_divisor
        # Inputs only (no copies): for a backward that has to recompute.
        ctx.save_for_backward(hidden, weight, bias, lse)
        return forward_outputs(ctx, losses, lse, state.terms.z_mask, z_loss, divisor, z_divisor)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_loss: Tensor | None, grad_z: Tensor | None = None
    ) -> tuple[Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        state: LinearRows = ctx.state
        if grads is not None and grad_z is None:
            # Computed in the forward for an incoming gradient of 1: scale them
            # and let go, so autograd adopts them as .grad without a copy (a
            # reference kept here made it clone dW: +0.5x of it in peak memory).
            scale = state.terms.coef_a.new_zeros(()) if grad_loss is None else grad_loss
            return input_gradients(_INPUTS, **grads.result(scale))
        # "none", a gradient for the z-loss part, or a second backward through
        # a retained graph: recompute.
        hidden, weight, bias, lse = ctx.saved_tensors
        scales = backward_scales(state, grad_loss, grad_z, lse, ctx.divisor, ctx.z_divisor)
        recomputed = _GradientAccumulator(hidden, weight, bias, ctx.needs_input_grad)
        for start in range(0, hidden.shape[0], ctx.step):
            part = slice(start, min(start + ctx.step, hidden.shape[0]))
            grad_logits, _, _ = state.chunk(hidden, weight, bias, part, scales)
            if grad_logits is not None:
                recomputed.add(part, grad_logits)
            del grad_logits  # as in the forward: two chunk-sized buffers at a time
        return input_gradients(_INPUTS, **recomputed.result(None))


#: The forward's argument names, for the backward's :func:`~labelsmooth.kernels.rowmath.input_gradients`.
_INPUTS = forward_arguments(LinearCrossEntropyFunction)


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

    def result(self, scale: Tensor | None) -> dict[str, Tensor | None]:
        """``dh``, ``dW``, ``db`` times ``scale``, in the inputs' dtypes, by the forward's names.

        With ``scale`` 1 (a plain ``loss.backward()``) the stored tensors are
        handed out without a copy; they are never modified here.
        """
        # One host read of a scalar per step (CPU only: no device sync), to
        # skip three (V, H)-sized products.
        unit = scale is None or (v.may_read_host(scale.device) and bool(scale == 1))
        pairs = {
            "hidden": (self.grad_hidden, self.hidden.dtype),
            "weight": (self.grad_weight, self.weight.dtype),
            "bias": (self.grad_bias, self.bias_dtype or self.weight.dtype),
        }
        return {
            name: None if grad is None else (grad if unit or scale is None else grad * scale).to(dtype)
            for name, (grad, dtype) in pairs.items()
        }


def fused_linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, *, bias: Tensor | None, smoothing: float,
    ignore_index: int, divisor: Tensor | float | None, chunk_size: int | None,
    class_weight: Tensor | None = None, z_loss: float = 0.0, z_divisor: Tensor | float | None = None,
    softcap: float | None = None, prior: Tensor | None = None,
) -> Any:
    """Kernel entry point on checked, flattened inputs.

    Runs the Triton kernels (:mod:`labelsmooth.kernels.triton_linear`, no logits at all) when
    :func:`labelsmooth.kernels.backend` says ``"triton"`` and they take the
    inputs (float32, bfloat16 or float16, at least one row, no outer ``torch.compile``);
    else the row chunks of :class:`LinearCrossEntropyFunction`.

    Args:
        hidden: ``(N, H)``.
        weight: ``(V, H)``, the hidden dtype.
        targets: ``(N,)`` int64 class indices or ``ignore_index``.
        bias: ``(V,)`` or ``None``.
        smoothing: smoothing mass ``s`` (may exceed 1 after the "others" conversion).
        ignore_index: index value that contributes nothing.
        divisor: ``None`` for the ``(N,)`` row losses, else a float or 0-dim
            tensor: ``sum_i loss_i / divisor``.
        chunk_size: rows per chunk of the chunked path; default about 9.4M
            logits (at least 128 rows). The Triton kernels hold no chunk.
        class_weight: ``(V,)`` class weights (PyTorch's index-target rule) or ``None``.
        z_loss: ``zeta``: each row not ignored adds ``zeta lse^2``; then the
            result is ``(loss, z-loss part)``.
        z_divisor: what the z-loss part's sum is divided by (default ``divisor``).
        softcap: ``k`` for the logits ``k tanh(z / k)``, or ``None``.
        prior: ``(V,)`` smoothing distribution, ``None`` for uniform.

    Returns:
        ``(N,)`` losses, or a scalar, in the compute dtype; with ``z_loss`` not
        0, ``(loss, z-loss part)``.
    """
    common = (hidden, weight, bias, targets, float(smoothing), prior, class_weight, int(ignore_index),
              divisor, float(z_loss), z_divisor, softcap)
    # Under an outer torch.compile the chunked path is traced (and the rule not asked).
    triton = not torch.compiler.is_compiling() and hidden.shape[0] > 0
    if triton and dispatch.backend(hidden.device) == "triton":
        from labelsmooth.kernels import triton_linear

        if triton_linear.supports(hidden):
            return triton_linear.TritonLinearCrossEntropyFunction.apply(*common)  # type: ignore[no-untyped-call]
    return LinearCrossEntropyFunction.apply(*common, chunk_size)  # type: ignore[no-untyped-call]

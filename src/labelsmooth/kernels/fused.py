"""The fused kernel: each row's max, sum of exp, target logits, class sum and gradient in one pass.

For ``(B, C, S)`` logits (classes not last) a row is strided, so Inductor
cannot keep it in cache between the reductions and the gradient's write;
there the forward keeps ``O(M)`` numbers and the backward writes the
gradient, as compiled PyTorch does.

The math is :mod:`labelsmooth.kernels.rowmath`'s; :mod:`labelsmooth.kernels.dispatch`
compiles it. When the logits need a gradient and the loss is reduced
(``divisor`` given), the forward writes the gradient for an incoming gradient
of 1 in the same pass over each row (Liger-Kernel's trick), and the backward
only scales it. Otherwise the forward keeps ``O(M)`` numbers and the backward
recomputes the gradient in one pass, the incoming gradient folded into the
row scales. Under an outer ``torch.compile`` the second form is used for
every reduction: the traced graph then holds one ``(M, C)`` buffer, the
gradient, as compiled PyTorch does.

With a z-loss the function has a second output, the z-loss part alone (per
row, or its sum over ``z_divisor``), which is also in the first. Its gradient
is exact; a backward in which it has none (it was only logged) keeps the
gradient the forward wrote.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch
from labelsmooth.kernels.chunked import recomputed_gradient, rows_per_chunk
from labelsmooth.kernels.rowmath import (
    Layout,
    cap_column,
    class_indices,
    component_loss_gradient,
    forward_arguments,
    forward_outputs,
    gradient_scales,
    input_gradients,
    keep_component_loss,
    per_row,
    row_losses,
    row_terms,
    unit_rows,
    with_z_loss_gradient,
    z_loss_scale,
)

__all__ = ["FusedIndexCrossEntropy"]


class FusedIndexCrossEntropy(torch.autograd.Function):
    """Per-row smoothed cross-entropy, or its sum over ``divisor``; with a z-loss,
    ``(loss, z-loss part)``.

    Arguments as :func:`labelsmooth.kernels.index_cross_entropy_rows`.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, target_weights: Tensor | None,
        smoothing: float, prior: Tensor | None, weight: Tensor | None, ignore_index: int,
        divisor: Tensor | float | None, z_loss: float, z_divisor: Tensor | float | None,
        softcap: float | None,
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
        column, index_view = layout.class_column(cm), layout.view(index)
        inv_cap = cap_column(layout, softcap, dtype=dtype, device=logits.device)
        precompute = (
            ctx.needs_input_grad[0] and divisor is not None and logits.dim() == 2
            and not torch.compiler.is_compiling()
        )
        grad = None
        if precompute:
            unit = unit_rows(divisor, coef_a)
            scales = gradient_scales(layout, unit, coef_a, smooth_mass, tw, cm)
            scale_z = None if z_mask is None else z_loss_scale(layout, unit_rows(z_divisor, coef_a),
                                                                z_loss, z_mask)
            grad, row_max, exp_sum, class_sum, z_y = dispatch.compiled("fused_rows")(
                logits, index_view, class_indices(layout, logits.device), *scales, column, scale_z,
                inv_cap, softcap,
            )
        else:
            row_max, exp_sum, class_sum, z_y = dispatch.compiled("row_statistics")(
                logits, index_view, column, dtype, inv_cap, softcap
            )
        loss, lse, nll_y, nll_smooth = row_losses(
            layout, row_max, exp_sum, class_sum, z_y, tw, smooth_mass, terms.mass_sum, cm is None
        )
        ctx.grad = grad
        ctx.divisor, ctx.z_divisor = divisor, z_divisor
        ctx.z_loss, ctx.softcap = z_loss, softcap
        ctx.save_for_backward(logits, index, tw, coef_a, smooth_mass, cm, lse, row_max, exp_sum, z_mask)
        keep_component_loss(ctx, targets, target_weights, ignore_index, tw, nll_y, smoothing * nll_smooth)
        return forward_outputs(ctx, loss, lse, z_mask, z_loss, divisor, z_divisor)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor | None, grad_z: Tensor | None = None
    ) -> tuple[Tensor | None, ...]:
        logits, index, tw, coef_a, smooth_mass, cm, lse, row_max, exp_sum, z_mask = ctx.saved_tensors
        dtype = coef_a.dtype
        grad_out = coef_a.new_zeros(()) if grad_out is None else grad_out.to(dtype)
        grad_loss = per_row(grad_out, ctx.divisor, coef_a)
        grad_mixing = component_loss_gradient(ctx, grad_loss)
        grad, ctx.grad = ctx.grad, None
        if not ctx.needs_input_grad[0]:
            return input_gradients(_INPUTS, target_weights=grad_mixing)
        if grad is not None and grad_z is None:
            # Computed in the forward for an incoming gradient of 1: scale it
            # (on CPU one host read skips the pass) and let go, so autograd
            # adopts it as .grad without a copy.
            if not (v.may_read_host(grad_out.device) and bool(grad_out == 1)):
                grad.mul_(grad_out)
            return input_gradients(_INPUTS, logits=grad, target_weights=grad_mixing)
        layout = Layout(logits.shape)
        scale_p, scale_u, scale_y = gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, cm)
        if z_mask is not None:
            scale_p = with_z_loss_gradient(layout, scale_p, lse, grad_out, grad_z, ctx.z_divisor,
                                           ctx.z_loss, z_mask)
        index_view, column = layout.view(index), layout.class_column(cm)
        inv_cap = cap_column(layout, ctx.softcap, dtype=dtype, device=logits.device)
        grad = dispatch.run(
            logits.device,
            inductor=lambda: dispatch.compiled("row_gradient")(
                logits, row_max, exp_sum, index_view, class_indices(layout, logits.device), scale_p,
                scale_u, scale_y, column, inv_cap, ctx.softcap,
            ),
            chunked=lambda: recomputed_gradient(
                logits, (scale_p, scale_u, scale_y, index_view, column), dtype=dtype,
                softcap=ctx.softcap, step=rows_per_chunk(layout, None),
            ),
        )
        return input_gradients(_INPUTS, logits=grad, target_weights=grad_mixing)


#: The forward's argument names, for the backward's :func:`~labelsmooth.kernels.rowmath.input_gradients`.
_INPUTS = forward_arguments(FusedIndexCrossEntropy)

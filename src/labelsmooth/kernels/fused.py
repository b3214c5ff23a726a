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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch
from labelsmooth.kernels.rowmath import Layout, class_mass, gradient_scales, row_coefficients

__all__ = ["FusedIndexCrossEntropy"]


class FusedIndexCrossEntropy(torch.autograd.Function):
    """Per-row smoothed cross-entropy, or its sum over ``divisor``.

    Arguments as :func:`labelsmooth.kernels.index_cross_entropy_rows`.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, target_weights: Tensor | None,
        smoothing: float, prior: Tensor | None, weight: Tensor | None, ignore_index: int,
        divisor: Tensor | float | None,
    ) -> Tensor:
        layout = Layout(logits.shape)
        dtype = compute_dtype(logits.dtype)
        cm = class_mass(layout.num_classes, prior, weight, dtype=dtype, device=logits.device)
        mass_sum = 1.0 if cm is None else cm.sum()
        index, tw, coef_a, smooth_mass = row_coefficients(
            targets, target_weights, smoothing=smoothing, weight=weight,
            ignore_index=ignore_index, mass_sum=mass_sum, dtype=dtype,
        )
        column, index_view = layout.class_column(cm), layout.view(index)
        precompute = (
            ctx.needs_input_grad[0] and divisor is not None and logits.dim() == 2
            and not torch.compiler.is_compiling()
        )
        grad = None
        if precompute:
            unit = 1.0 / torch.as_tensor(divisor, dtype=dtype, device=logits.device)
            scales = gradient_scales(layout, unit.expand(coef_a.shape), coef_a, smooth_mass, tw, cm)
            grad, row_max, exp_sum, class_sum, z_y = dispatch.compiled("fused_rows")(
                logits, index_view, *scales, column
            )
        else:
            row_max, exp_sum, class_sum, z_y = dispatch.compiled("row_statistics")(
                logits, index_view, column, dtype
            )
        lse = layout.flat(row_max + exp_sum.log()).reshape(-1)
        nll_y = lse[:, None] - layout.flat(z_y)
        class_sum = layout.flat(class_sum).reshape(-1)
        if cm is None:
            class_sum = class_sum / layout.num_classes
        nll_smooth = lse * mass_sum - class_sum
        loss = (tw * nll_y).sum(1) + smooth_mass * nll_smooth
        ctx.grad = grad
        ctx.divisor = divisor
        ctx.save_for_backward(logits, index, tw, coef_a, smooth_mass, cm, row_max, exp_sum)
        ctx.component_loss = None
        if target_weights is not None and ctx.needs_input_grad[2]:
            ctx.component_loss_shape = target_weights.shape
            ctx.component_loss = _component_loss(targets, target_weights, ignore_index, tw, nll_y,
                                                 smoothing * nll_smooth)
        return loss if divisor is None else loss.sum() / divisor

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logits, index, tw, coef_a, smooth_mass, cm, row_max, exp_sum = ctx.saved_tensors
        grads: list[Tensor | None] = [None] * 8
        grad_out = grad_out.to(coef_a.dtype)
        grad_loss = grad_out if ctx.divisor is None else (grad_out / ctx.divisor).expand(coef_a.shape)
        if ctx.component_loss is not None:
            grads[2] = (grad_loss[:, None] * ctx.component_loss).reshape(ctx.component_loss_shape)
        grad, ctx.grad = ctx.grad, None
        if not ctx.needs_input_grad[0]:
            return tuple(grads)
        if grad is not None:
            # Computed in the forward for an incoming gradient of 1: scale it
            # (on CPU one host read skips the pass) and let go, so autograd
            # adopts it as .grad without a copy.
            if not (v.may_read_host(grad_out.device) and bool(grad_out == 1)):
                grad.mul_(grad_out)
            grads[0] = grad
            return tuple(grads)
        layout = Layout(logits.shape)
        scales = gradient_scales(layout, grad_loss, coef_a, smooth_mass, tw, cm)
        grads[0] = dispatch.compiled("row_gradient")(
            logits, row_max, exp_sum, layout.view(index), *scales, layout.class_column(cm)
        )
        return tuple(grads)


def _component_loss(
    targets: Tensor, target_weights: Tensor, ignore_index: int, tw: Tensor, nll_y: Tensor,
    smooth_nll: Tensor,
) -> Tensor:
    """``d loss_i / d lam_ik``, for callers that learn mixing weights."""
    shape = tw.shape
    valid = (targets.reshape(shape) != ignore_index).to(tw.dtype)
    per_mass = tw / torch.where(valid > 0, target_weights.reshape(shape).to(tw.dtype), 1.0)
    return valid * (per_mass * nll_y + smooth_nll[:, None])

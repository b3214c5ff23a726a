"""The per-row state of one fused linear cross-entropy call, shared by both of its kernels.

:class:`LinearRows` holds the row coefficients (:func:`~labelsmooth.kernels.rowmath.row_terms`)
and computes a chunk's logits and statistics; :func:`backward_scales` turns the
incoming gradients into the row scales of a backward that recomputes the
logits. The chunked kernel (:mod:`labelsmooth.kernels.linear`) and the Triton
kernels (:mod:`labelsmooth.kernels.triton_linear`) both import it, so neither
imports the other at module level.
"""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch
from labelsmooth.kernels.rowmath import (
    Layout,
    cap_column,
    class_indices,
    gradient_scales,
    per_row,
    row_losses,
    row_terms,
    with_z_loss_gradient,
    z_loss_scale,
)

__all__ = ["LinearRows", "backward_scales"]


class LinearRows:
    """The per-row coefficients of one call (:func:`~labelsmooth.kernels.rowmath.row_terms`);
    the Triton kernels (:mod:`labelsmooth.kernels.triton_linear`) share them."""

    def __init__(self, targets: Tensor, num_classes: int, *, smoothing: float, prior: Tensor | None,
                 weight: Tensor | None, ignore_index: int, z_loss: float, softcap: float | None,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.terms = row_terms(
            targets, None, num_classes, smoothing=smoothing, prior=prior, weight=weight,
            ignore_index=ignore_index, z_loss=z_loss, dtype=dtype, device=device,
        )
        self.z_loss, self.softcap = z_loss, softcap
        #: All rows, for the row scales (flat: 2-D logits).
        self.layout = Layout(torch.Size((targets.shape[0], num_classes)))
        self.classes = class_indices(self.layout, device)

    def chunk(self, hidden: Tensor, weight: Tensor, bias: Tensor | None, part: slice,
              grad_scales: tuple[Tensor, ...] | None) -> tuple[Tensor | None, Tensor, Tensor]:
        """Rows ``part``: ``(dz for the given (scale_p, scale_u, scale_y[, scale_z]) or None,
        unreduced loss (n,), lse (n,))``."""
        logits = torch.nn.functional.linear(hidden[part], weight, bias)
        dtype = compute_dtype(logits.dtype)
        layout = Layout(logits.shape)
        terms = self.terms
        index = terms.target_index[part]
        column = layout.class_column(terms.cm)
        inv_cap = cap_column(layout, self.softcap, dtype=dtype, device=logits.device)
        grad = None
        if grad_scales is None:
            row_max, exp_sum, class_sum, z_y = dispatch.run_row_function(
                "row_statistics", logits.device, logits, index, column, dtype, inv_cap, self.softcap)
        else:
            scale_p, scale_u, scale_y, *scale_z = (scale[part] for scale in grad_scales)
            grad, row_max, exp_sum, class_sum, z_y = dispatch.run_row_function(
                "fused_rows", logits.device, logits.to(dtype), index, self.classes, scale_p, scale_u,
                scale_y, column, scale_z[0] if scale_z else None, inv_cap, self.softcap,
            )
        loss, lse, _, _ = row_losses(layout, row_max, exp_sum, class_sum, z_y, terms.tw[part],
                                     terms.smooth_mass[part], terms.mass_sum, terms.cm is None)
        return grad, loss, lse

    def scales(self, grad_rows: Tensor, grad_z_rows: Tensor | None) -> tuple[Tensor, ...]:
        """The gradient's row scales for per-row incoming gradients (and the z-loss part's)."""
        layout, terms = self.layout, self.terms
        scales = gradient_scales(layout, grad_rows, terms.coef_a, terms.smooth_mass, terms.tw, terms.cm)
        if terms.z_mask is None or grad_z_rows is None:
            return scales
        return (*scales, z_loss_scale(layout, grad_z_rows, self.z_loss, terms.z_mask))


def backward_scales(
    state: LinearRows, grad_loss: Tensor | None, grad_z: Tensor | None, lse: Tensor,
    divisor: Tensor | float | None, z_divisor: Tensor | float | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(scale_p, scale_u, scale_y)`` of a backward that recomputes the logits, for the
    incoming gradients of the loss and of the z-loss part (``None`` when unused)."""
    terms = state.terms
    grad_out = (terms.coef_a.new_zeros(()) if grad_loss is None else grad_loss).to(terms.coef_a.dtype)
    scale_p, scale_u, scale_y = state.scales(per_row(grad_out, divisor, terms.coef_a), None)
    if terms.z_mask is not None:
        scale_p = with_z_loss_gradient(state.layout, scale_p, lse, grad_out, grad_z, z_divisor,
                                       state.z_loss, terms.z_mask)
    return scale_p, scale_u, scale_y

"""The per-row math every index-target kernel shares.

Write ``s`` for the smoothing mass, ``cm_c = u_c w_c`` for the class mass of
the smoothing term (``u`` uniform or a prior, ``w`` the class weights),
``S = sum_c cm_c``, ``mass_ik = lam_ik [y_ik valid]`` and ``m_i = sum_k mass_ik``.
Then per row::

    loss_i = A_i lse_i - sum_k tw_ik z_{y_ik} - s m_i (z_i . cm)
    A_i    = sum_k tw_ik + s m_i S,          tw_ik = (1 - s) mass_ik w_{y_ik}
    dloss_i / dz_ic = A_i softmax(z_i)_c - sum_k tw_ik [c = y_ik] - s m_i cm_c

so a row needs ``lse``, ``z`` at the targets and one weighted row sum for the
loss, and only ``softmax`` and per-row scalars for the gradient.

The functions here see logits ``(B, C)`` or ``(B, C, S)`` (classes on
dimension 1) and per-position tensors viewed against them by :class:`Layout`.
:func:`fused_rows`, :func:`row_statistics` and :func:`row_gradient` are plain,
traceable torch code: :mod:`labelsmooth.kernels.dispatch` has Inductor compile
each into one loop over rows (CPU C++ or GPU Triton), and under an outer
``torch.compile`` they are traced as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "Layout",
    "class_mass",
    "fused_rows",
    "gradient_scales",
    "row_coefficients",
    "row_gradient",
    "row_statistics",
]


class Layout:
    """Positions of ``(M, C)`` logits (``spatial = None``) or of ``(B, C, S)`` logits, ``M = B S``.

    Per-position tensors are computed flat, ``(M,)`` or ``(M, K)`` in ``(B, S)``
    order; :meth:`view` shapes them to broadcast against the logits along the
    class dimension 1: ``(M, 1)``/``(M, K)`` or ``(B, 1, S)``/``(B, K, S)``.
    """

    def __init__(self, shape: torch.Size) -> None:
        self.batch, self.num_classes = shape[0], shape[1]
        self.spatial = shape[2] if len(shape) == 3 else None
        self.positions = self.batch * (self.spatial or 1)

    def view(self, flat: Tensor) -> Tensor:
        columns = flat.reshape(self.positions, -1)
        if self.spatial is None:
            return columns
        return columns.reshape(self.batch, self.spatial, -1).transpose(1, 2)

    def flat(self, viewed: Tensor) -> Tensor:
        """Inverse of :meth:`view`: ``(M, K)``."""
        if self.spatial is None:
            return viewed.reshape(self.positions, -1)
        return viewed.transpose(1, 2).reshape(self.positions, -1)

    def class_column(self, vector: Tensor | None) -> Tensor | None:
        """A ``(C,)`` vector shaped to broadcast along the class dimension."""
        if vector is None:
            return None
        return vector.reshape(-1, *([1] * (self.spatial is not None)))


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

    ``mass_sum`` is ``S``. Ignored components point at class 0 with 0 mass.
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


def gradient_scales(
    layout: Layout, grad_loss: Tensor, coef_a: Tensor, smooth_mass: Tensor, tw: Tensor,
    cm: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(scale_p, scale_u, scale_y)`` viewed against the logits, for the gradient
    ``grad_loss_i dloss_i / dz_i = scale_p p - scale_u cm + scale_y onehot``
    (``cm = 1`` when it is the uniform ``1 / C``, folded into ``scale_u``)."""
    scale_u = grad_loss * smooth_mass
    if cm is None:
        scale_u = scale_u / layout.num_classes
    scale_y = -(grad_loss[:, None] * tw)
    return layout.view(grad_loss * coef_a), layout.view(scale_u), layout.view(scale_y)


def _class_sum(z: Tensor, class_column: Tensor | None) -> Tensor:
    """``sum_c cm_c z_c`` (the plain sum when ``cm`` is ``None``), kept as a class dim of 1."""
    if class_column is None:
        return z.sum(1, keepdim=True)
    return (z * class_column).sum(1, keepdim=True)


def row_statistics(
    logits: Tensor, index: Tensor, class_column: Tensor | None, dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(max z, sum exp(z - max), z . cm, z at the targets)``, each with the class dim kept.

    With ``class_column=None`` the third is ``sum_c z_c``: the caller divides
    by ``C``, since any arithmetic on a reduction here would cost Inductor its
    one-loop fusion.
    """
    z = logits.to(dtype)
    row_max = z.amax(1, keepdim=True)
    exp_sum = torch.exp(z - row_max).sum(1, keepdim=True)
    return row_max, exp_sum, _class_sum(z, class_column), z.gather(1, index)


def row_gradient(
    logits: Tensor, row_max: Tensor, exp_sum: Tensor, index: Tensor, scale_p: Tensor,
    scale_u: Tensor, scale_y: Tensor, class_column: Tensor | None,
) -> Tensor:
    """``scale_p softmax(z) - scale_u cm + sum_k scale_y_k onehot(y_k)``, in the logits' dtype."""
    z = logits.to(row_max.dtype)
    return _gradient(torch.exp(z - row_max), exp_sum, index, scale_p, scale_u, scale_y, class_column,
                     logits.dtype)


def _gradient(
    exp_centered: Tensor, exp_sum: Tensor, index: Tensor, scale_p: Tensor, scale_u: Tensor,
    scale_y: Tensor, class_column: Tensor | None, dtype: torch.dtype,
) -> Tensor:
    grad = (scale_p / exp_sum) * exp_centered
    grad = grad - (scale_u if class_column is None else scale_u * class_column)
    # The one-hot terms as a select against the class index: a scatter would
    # be its own pass (and its own parallel region) over the gradient.
    classes = torch.arange(grad.shape[1], device=grad.device).reshape(-1, *([1] * (grad.dim() - 2)))
    for k in range(index.shape[1]):
        grad = torch.where(classes == index[:, k : k + 1], grad + scale_y[:, k : k + 1], grad)
    return grad.to(dtype)


def fused_rows(
    logits: Tensor, index: Tensor, scale_p: Tensor, scale_u: Tensor, scale_y: Tensor,
    class_column: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`row_statistics` and :func:`row_gradient` in one pass: ``(grad, max, sum exp, z . cm, z_y)``.

    Only the reductions themselves are returned (no per-row arithmetic on
    them): Inductor then keeps the max, the sum, the class sum and the
    gradient's write in one loop body per row, so the row is read from memory
    once and stays in cache for the rest, and ``exp`` is taken once per element.
    """
    z = logits.to(scale_p.dtype)
    row_max = z.amax(1, keepdim=True)
    exp_centered = torch.exp(z - row_max)
    exp_sum = exp_centered.sum(1, keepdim=True)
    grad = _gradient(exp_centered, exp_sum, index, scale_p, scale_u, scale_y, class_column, logits.dtype)
    return grad, row_max, exp_sum, _class_sum(z, class_column), z.gather(1, index)

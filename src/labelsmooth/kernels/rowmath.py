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

Two options change the logits and add a term, both inside the same pass:

* softcap ``k`` (Gemma 2): every ``z`` above is ``k tanh(x / k)`` of the raw
  logits ``x``, and the gradient with respect to ``x`` is the one above times
  ``1 - tanh(x / k)^2``;
* z-loss ``zeta`` (PaLM): row ``i`` adds ``zeta v_i lse_i^2`` (``v_i`` is 1 for
  a position with target mass, else 0), whose gradient adds
  ``2 zeta v_i lse_i softmax(z_i)``, folded into the scale of ``softmax``.

The functions here see logits ``(B, C)`` or ``(B, C, S)`` (classes on
dimension 1) and per-position tensors viewed against them by :class:`Layout`.
:func:`fused_rows`, :func:`row_statistics` and :func:`row_gradient` are plain,
traceable torch code: :mod:`labelsmooth.kernels.dispatch` has Inductor compile
each into one loop over rows (CPU C++ or GPU Triton), and under an outer
``torch.compile`` they are traced as they are.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
from torch import Tensor

from labelsmooth._smoothing import weighted_distribution

__all__ = [
    "Layout",
    "RowTerms",
    "cap_column",
    "capped",
    "class_indices",
    "class_mass",
    "component_loss_gradient",
    "forward_arguments",
    "forward_outputs",
    "fused_rows",
    "gradient_scales",
    "input_gradients",
    "keep_component_loss",
    "outputs",
    "per_row",
    "row_coefficients",
    "row_gradient",
    "row_losses",
    "row_statistics",
    "row_terms",
    "target_mask",
    "unit_rows",
    "with_z_loss_gradient",
    "z_loss_scale",
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
        columns = flat.unsqueeze(1) if flat.dim() == 1 else flat
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


def _components(targets: Tensor) -> Tensor:
    """``(M,)`` or ``(M, K)`` targets as ``(M, K)`` (also for ``M = 0``)."""
    return targets if targets.dim() == 2 else targets.reshape(-1, 1)


def class_mass(
    num_classes: int, prior: Tensor | None, weight: Tensor | None, *, dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """``cm = u * w`` (``u`` uniform or ``prior``), or ``None`` when it is the constant ``1 / C``."""
    if prior is None and weight is None:
        return None
    return weighted_distribution(num_classes, prior, weight, dtype=dtype, device=device)


def row_coefficients(
    targets: Tensor, target_weights: Tensor | None, *, smoothing: float, weight: Tensor | None,
    ignore_index: int, mass_sum: Tensor | float, dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row target statistics: ``(index (M, K), tw (M, K), A (M,), s * m (M,))``.

    ``mass_sum`` is ``S``. Ignored components point at class 0 with 0 mass.
    """
    index = _components(targets)
    valid = index != ignore_index
    index = torch.where(valid, index, 0)
    mass = valid.to(dtype)
    if target_weights is not None:
        mass = mass * target_weights.reshape(index.shape).to(dtype)
    smooth_mass = smoothing * mass.sum(1)
    tw = mass if weight is None else mass * weight.to(dtype)[index]
    tw = (1.0 - smoothing) * tw
    return index, tw, tw.sum(1) + smooth_mass * mass_sum, smooth_mass


class RowTerms(NamedTuple):
    """What every kernel's forward derives from the targets before it reads a logit."""

    #: ``cm`` (:func:`class_mass`), ``None`` for the constant ``1 / C``.
    cm: Tensor | None
    #: ``S = sum_c cm_c`` (1 for ``cm = None``).
    mass_sum: Tensor | float
    #: The four outputs of :func:`row_coefficients` (``index`` is a tuple method's name).
    target_index: Tensor
    tw: Tensor
    coef_a: Tensor
    smooth_mass: Tensor
    #: :func:`target_mask`, or ``None`` without a z-loss.
    z_mask: Tensor | None


def row_terms(
    targets: Tensor, target_weights: Tensor | None, num_classes: int, *, smoothing: float,
    prior: Tensor | None, weight: Tensor | None, ignore_index: int, z_loss: float,
    dtype: torch.dtype, device: torch.device,
) -> RowTerms:
    """:func:`class_mass`, :func:`row_coefficients` and (with a z-loss) :func:`target_mask`."""
    cm = class_mass(num_classes, prior, weight, dtype=dtype, device=device)
    mass_sum = 1.0 if cm is None else cm.sum()
    index, tw, coef_a, smooth_mass = row_coefficients(
        targets, target_weights, smoothing=smoothing, weight=weight, ignore_index=ignore_index,
        mass_sum=mass_sum, dtype=dtype,
    )
    z_mask = target_mask(targets, target_weights, ignore_index, dtype) if z_loss else None
    return RowTerms(cm, mass_sum, index, tw, coef_a, smooth_mass, z_mask)


def keep_component_loss(
    ctx: Any, targets: Tensor, target_weights: Tensor | None, ignore_index: int, tw: Tensor,
    nll_y: Tensor, smooth_nll: Tensor,
) -> None:
    """Keep ``d loss_i / d lam_ik`` on a kernel's ``ctx`` when the mixing weights (input 2)
    need a gradient: ``-log p`` at the component's class times its weight ``tw_ik / lam_ik``,
    plus ``smooth_nll`` (``s`` times the smoothing term), per component not ignored."""
    ctx.component_loss = None
    if target_weights is None or not ctx.needs_input_grad[2]:
        return
    shape = tw.shape
    valid = (targets.reshape(shape) != ignore_index).to(tw.dtype)
    per_mass = tw / torch.where(valid > 0, target_weights.reshape(shape).to(tw.dtype), 1.0)
    ctx.component_loss = valid * (per_mass * nll_y + smooth_nll[:, None])
    ctx.component_loss_shape = target_weights.shape


def component_loss_gradient(ctx: Any, grad_loss: Tensor) -> Tensor | None:
    """The mixing weights' gradient from :func:`keep_component_loss` and the rows' incoming
    gradient ``grad_loss`` ``(M,)``, in their shape (``None`` when none was kept)."""
    kept: Tensor | None = ctx.component_loss
    return None if kept is None else (grad_loss[:, None] * kept).reshape(ctx.component_loss_shape)


def target_mask(targets: Tensor, target_weights: Tensor | None, ignore_index: int,
                dtype: torch.dtype) -> Tensor:
    """``v`` ``(M,)``: 1 where a position has target mass (a component that is not
    ignored, with a nonzero mixing weight), else 0. The positions the z-loss counts."""
    valid = _components(targets) != ignore_index
    if target_weights is not None:
        valid = valid & (target_weights.reshape(valid.shape) != 0)
    return valid.any(1).to(dtype)


def row_losses(
    layout: Layout, row_max: Tensor, exp_sum: Tensor, class_sum: Tensor, z_y: Tensor, tw: Tensor,
    smooth_mass: Tensor, mass_sum: Tensor | float, uniform: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(loss (M,), lse (M,), -log p at the targets (M, K), sum_c cm_c (-log p_c) (M,))``
    from the reductions of :func:`row_statistics` (``uniform``: ``class_sum`` is the plain sum)."""
    lse = layout.flat(row_max + _serial_log(exp_sum)).reshape(-1)
    nll_y = lse[:, None] - layout.flat(z_y)
    class_sum = layout.flat(class_sum).reshape(-1)
    if uniform:
        class_sum = class_sum / layout.num_classes
    nll_smooth = lse * mass_sum - class_sum
    return (tw * nll_y).sum(1) + smooth_mass * nll_smooth, lse, nll_y, nll_smooth


def _serial_log(x: Tensor) -> Tensor:
    """``log x`` elementwise, without a parallel region for a few thousand rows.

    ATen's ``log`` is MKL's ``vsLn`` in parallel chunks of 2048 elements: for
    8192 rows a parallel region of microseconds of work, whose wake-up on a
    busy machine waits for a descheduled thread (1.5-6.5 ms measured after the
    compiled kernel, on 2 shared cores; BENCHMARKS.md). ``xlogy`` is a plain
    element loop that goes parallel only at ATen's usual grain (32768).
    """
    return torch.xlogy(1.0, x)


def outputs(
    loss: Tensor, lse: Tensor | None, z_mask: Tensor | None, z_loss: float,
    divisor: Tensor | float | None, z_divisor: Tensor | float | None,
) -> Tensor | tuple[Tensor, Tensor]:
    """What a kernel returns from its row losses: the rows, or their sum over ``divisor``; with
    a z-loss (``z_mask`` given) ``(loss, z-loss part)``, the part summed over ``z_divisor``
    (default ``divisor``) and included in the loss."""
    if z_mask is None or lse is None:
        return loss if divisor is None else loss.sum() / divisor
    z_rows = z_loss * z_mask * lse.square()
    if divisor is None:
        return loss + z_rows, z_rows
    z_part = z_rows.sum() / (divisor if z_divisor is None else z_divisor)
    return loss.sum() / divisor + z_part, z_part


def forward_outputs(
    ctx: Any, loss: Tensor, lse: Tensor | None, z_mask: Tensor | None, z_loss: float,
    divisor: Tensor | float | None, z_divisor: Tensor | float | None,
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`outputs`, returned by an autograd ``forward``: with a z-loss, the z-loss part's
    incoming gradient is ``None`` in backward when the part was only logged."""
    if z_mask is not None:
        ctx.set_materialize_grads(False)
    return outputs(loss, lse, z_mask, z_loss, divisor, z_divisor)


def forward_arguments(function: type[torch.autograd.Function]) -> tuple[str, ...]:
    """The names of ``function.forward``'s arguments after ``ctx``, for :func:`input_gradients`.
    Read once, at import: a backward that ``torch.compile`` traces cannot inspect a signature."""
    return tuple(inspect.signature(function.forward).parameters)[1:]


def input_gradients(arguments: tuple[str, ...], **grads: Tensor | None) -> tuple[Tensor | None, ...]:
    """What a ``backward`` returns: ``grads`` by the names of the forward's ``arguments``
    (:func:`forward_arguments`), in their order, and ``None`` for every other argument."""
    for name in grads:
        if name not in arguments:
            raise TypeError(f"input_gradients: expected names from {arguments}, got {name!r}")
    return tuple(grads.get(name) for name in arguments)


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


def z_loss_scale(layout: Layout, grad_z: Tensor, z_loss: float, z_mask: Tensor) -> Tensor:
    """``2 zeta v_i grad_z_i`` viewed against the logits: times ``lse_i``, the z-loss
    part of the scale of ``softmax``."""
    return layout.view(grad_z * (2.0 * z_loss) * z_mask)


def with_z_loss_gradient(
    layout: Layout, scale_p: Tensor, lse: Tensor, grad_out: Tensor, grad_z: Tensor | None,
    z_divisor: Tensor | float | None, z_loss: float, z_mask: Tensor,
) -> Tensor:
    """``scale_p`` plus the z-loss rows' part, for a backward that recomputes the gradient:
    those rows carry the loss's incoming gradient and the z-loss part's own (``grad_z``)."""
    grad_rows = grad_out if grad_z is None else grad_out + grad_z.to(grad_out.dtype)
    scale_z = z_loss_scale(layout, per_row(grad_rows, z_divisor, lse), z_loss, z_mask)
    return scale_p + scale_z * layout.view(lse)


def unit_rows(divisor: Tensor | float | None, like: Tensor) -> Tensor:
    """``1 / divisor`` per row (1 for per-row losses): the row weights of a unit incoming gradient."""
    if divisor is None:
        return like.new_ones(()).expand(like.shape)
    return (1.0 / torch.as_tensor(divisor, dtype=like.dtype, device=like.device)).expand(like.shape)


def per_row(grad: Tensor, divisor: Tensor | float | None, like: Tensor) -> Tensor:
    """The incoming gradient of each row's loss: ``grad`` itself per row, or ``grad / divisor``."""
    return grad.expand(like.shape) if divisor is None else (grad / divisor).expand(like.shape)


def cap_column(layout: Layout, softcap: float | None, *, dtype: torch.dtype,
               device: torch.device) -> Tensor | None:
    """``1 / softcap`` per position, viewed against the logits, or ``None``.

    A per-position operand, not a scalar: it keeps ``tanh`` inside Inductor's
    loop over rows, where its result stays in a row-sized local buffer (with a
    scalar, Inductor computes ``tanh`` in a separate pass into a full-size buffer).
    """
    if softcap is None:
        return None
    return layout.view(torch.full((layout.positions,), 1.0 / softcap, dtype=dtype, device=device))


def capped(z: Tensor, inv_cap: Tensor | None, softcap: float | None) -> tuple[Tensor, Tensor | None]:
    """``(softcap tanh(z / softcap), tanh(z / softcap))``, or ``(z, None)`` without a cap."""
    if inv_cap is None or softcap is None:
        return z, None
    tanh = torch.tanh(z * inv_cap)
    return softcap * tanh, tanh


def _class_sum(z: Tensor, class_column: Tensor | None) -> Tensor:
    """``sum_c cm_c z_c`` (the plain sum when ``cm`` is ``None``), kept as a class dim of 1."""
    if class_column is None:
        return z.sum(1, keepdim=True)
    return (z * class_column).sum(1, keepdim=True)


def row_statistics(
    logits: Tensor, index: Tensor, class_column: Tensor | None, dtype: torch.dtype,
    inv_cap: Tensor | None = None, softcap: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(max z, sum exp(z - max), z . cm, z at the targets)``, each with the class dim kept,
    for the capped logits ``z`` (``inv_cap`` from :func:`cap_column`).

    With ``class_column=None`` the third is ``sum_c z_c``: the caller divides
    by ``C``, since any arithmetic on a reduction here would cost Inductor its
    one-loop fusion.
    """
    raw = logits.to(dtype)
    z, _ = capped(raw, inv_cap, softcap)
    row_max = z.amax(1, keepdim=True)
    exp_sum = torch.exp(z - row_max).sum(1, keepdim=True)
    return row_max, exp_sum, _class_sum(z, class_column), _target_logits(raw, index, softcap)


def row_gradient(
    logits: Tensor, row_max: Tensor, exp_sum: Tensor, index: Tensor, classes: Tensor,
    scale_p: Tensor, scale_u: Tensor, scale_y: Tensor, class_column: Tensor | None,
    inv_cap: Tensor | None = None, softcap: float | None = None,
) -> Tensor:
    """``(scale_p softmax(z) - scale_u cm + sum_k scale_y_k onehot(y_k)) dz/dx``, in the
    logits' dtype (``dz/dx = 1 - tanh^2`` under a cap; a z-loss is already in ``scale_p``;
    ``classes`` from :func:`class_indices`)."""
    z, tanh = capped(logits.to(row_max.dtype), inv_cap, softcap)
    grad = _gradient(torch.exp(z - row_max), exp_sum, index, classes, scale_p, scale_u, scale_y,
                     class_column)
    return _through_cap(grad, tanh).to(logits.dtype)


def _target_logits(raw: Tensor, index: Tensor, softcap: float | None) -> Tensor:
    # Gathered from the raw logits and capped after: a gather from the capped
    # ones would read the tanh buffer out of order, which keeps Inductor from
    # making it a row-local buffer.
    target = raw.gather(1, index)
    return target if softcap is None else softcap * torch.tanh(target / softcap)


def _through_cap(grad: Tensor, tanh: Tensor | None) -> Tensor:
    """The chain rule through ``k tanh(x / k)``: times ``1 - tanh^2``."""
    return grad if tanh is None else grad * (1 - tanh * tanh)


def class_indices(layout: Layout, device: torch.device) -> Tensor:
    """``0, ..., C - 1`` shaped to broadcast along the class dimension, int32 where it fits.

    The row functions take it as an input: from an ``arange`` inside them,
    Inductor's C++ builds the vector of class indices anew in every 16-element
    step of the row loop, which was 37% of the fused kernel's time at
    (8192, 1000); a loaded int32 vector costs one load and a compare half as
    wide as int64's (BENCHMARKS.md, "cross_entropy at (8192, 1000)").
    """
    fits = layout.num_classes <= torch.iinfo(torch.int32).max
    classes = torch.arange(layout.num_classes, dtype=torch.int32 if fits else torch.int64, device=device)
    return classes.reshape(-1, *([1] * (layout.spatial is not None)))


def _gradient(
    exp_centered: Tensor, exp_sum: Tensor, index: Tensor, classes: Tensor, scale_p: Tensor,
    scale_u: Tensor, scale_y: Tensor, class_column: Tensor | None,
) -> Tensor:
    grad = (scale_p / exp_sum) * exp_centered
    grad = grad - (scale_u if class_column is None else scale_u * class_column)
    # The one-hot terms as a select against the class index: a scatter would
    # be its own pass (and its own parallel region) over the gradient.
    index = index.to(classes.dtype)
    for k in range(index.shape[1]):
        grad = torch.where(classes == index[:, k : k + 1], grad + scale_y[:, k : k + 1], grad)
    return grad


def fused_rows(
    logits: Tensor, index: Tensor, classes: Tensor, scale_p: Tensor, scale_u: Tensor,
    scale_y: Tensor, class_column: Tensor | None, scale_z: Tensor | None = None,
    inv_cap: Tensor | None = None, softcap: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`row_statistics` and :func:`row_gradient` in one pass: ``(grad, max, sum exp, z . cm, z_y)``
    (``classes`` from :func:`class_indices`).

    Only the reductions themselves are returned (no per-row arithmetic on
    them): Inductor then keeps the max, the sum, the class sum and the
    gradient's write in one loop body per row, so the row is read from memory
    once and stays in cache for the rest, and ``exp`` (and ``tanh`` under a
    cap) is taken once per element. ``scale_z`` (:func:`z_loss_scale`) adds
    ``scale_z lse`` to the scale of ``softmax``.
    """
    raw = logits.to(scale_p.dtype)
    z, tanh = capped(raw, inv_cap, softcap)
    row_max = z.amax(1, keepdim=True)
    exp_centered = torch.exp(z - row_max)
    exp_sum = exp_centered.sum(1, keepdim=True)
    if scale_z is not None:
        # The log taken after the broadcast to the row: Inductor then computes
        # it as a scalar inside the gradient's loop. A per-row log node would
        # be realized in a pass of its own, splitting the one loop over rows.
        lse = row_max + torch.log(exp_sum.expand_as(exp_centered))
        scale_p = scale_p + scale_z * lse
    grad = _gradient(exp_centered, exp_sum, index, classes, scale_p, scale_u, scale_y, class_column)
    grad = _through_cap(grad, tanh).to(logits.dtype)
    return grad, row_max, exp_sum, _class_sum(z, class_column), _target_logits(raw, index, softcap)

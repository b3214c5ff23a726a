"""Target forms and the smoothing distribution.

A target is a distribution over ``C`` classes. It arrives as class indices
(the logits' shape without the class dimension) or as dense probabilities (the
logits' shape). Smoothing mixes it with a distribution ``u`` (uniform, or a
``prior``)::

    q = (1 - alpha) * target + alpha * u

Two conventions are in use and are easy to confuse:

* ``"uniform"`` (PyTorch, Composer, timm, Keras, optax): every class gets
  ``alpha / C``, so the true class ends at ``1 - alpha + alpha / C``.
* ``"others"`` (fairseq, Megatron-LM, NeMo): the true class gets exactly
  ``1 - alpha`` and each other class ``alpha / (C - 1)``.

They are the same family: ``"others"`` with ``alpha`` equals ``"uniform"`` with
``alpha * C / (C - 1)``. :func:`effective_alpha` does that conversion, so every
kernel only knows the ``"uniform"`` form.

A negative ``alpha`` (``allow_negative=True``, down to -1 in either
convention) is negative label smoothing: mass moves from the other classes to
the true one, which gets more than 1 while the others go below 0.
"""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth._smoothing import along_dim, smoothing_distribution
from labelsmooth.soft_targets import SoftTargets

__all__ = ["check_prior_convention", "effective_alpha", "ensure_targets_one_hot", "smooth_labels"]


def effective_alpha(alpha: float, num_classes: int, convention: str) -> float:
    """The ``"uniform"``-convention alpha that gives the same target as ``convention``.

    For ``"others"`` this is ``alpha * C / (C - 1)`` (it exceeds 1 when
    ``alpha > (C - 1) / C``, which is still a valid target, and is below -1
    when ``alpha < -(C - 1) / C``). With one class
    there are no other classes, so nothing is smoothed.
    """
    if convention == "uniform":
        return alpha
    return alpha * num_classes / (num_classes - 1) if num_classes > 1 else 0.0


def check_prior_convention(prior: Tensor | None, convention: str) -> None:
    if prior is not None and convention == "others":
        raise v.fail(
            "convention",
            "'uniform' when a prior is given ('others' spreads alpha evenly over the other classes)",
            convention,
        )


def _index_to_dense(
    logits: Tensor, targets: Tensor, alpha: float, prior: Tensor | None,
    ignore_index: int | None, dim: int,
) -> Tensor:
    num_classes = logits.shape[dim]
    dtype = compute_dtype(logits.dtype)
    u = smoothing_distribution(num_classes, prior, dtype=dtype, device=logits.device)
    valid = torch.ones_like(targets, dtype=torch.bool)
    if ignore_index is not None:
        valid = targets != ignore_index
    index = torch.where(valid, targets, 0).to(device=logits.device, dtype=torch.long).unsqueeze(dim)
    # Built directly in the result dtype: no int64 one-hot on the way.
    dense = (along_dim(u, logits.dim(), dim) * alpha).expand(logits.shape).clone()
    dense.scatter_add_(dim, index, torch.full(index.shape, 1.0 - alpha, dtype=dtype, device=dense.device))
    if ignore_index is not None:
        dense.mul_(valid.to(device=dense.device).unsqueeze(dim))
    return dense


@overload
def smooth_labels(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.1,
    *,
    prior: Tensor | None = None,
    ignore_index: int | None = None,
    dim: int = 1,
    convention: str = "uniform",
    allow_negative: bool = False,
) -> Tensor: ...


@overload
def smooth_labels(
    logits: Tensor,
    targets: SoftTargets,
    alpha: float = 0.1,
    *,
    prior: Tensor | None = None,
    ignore_index: int | None = None,
    dim: int = 1,
    convention: str = "uniform",
    allow_negative: bool = False,
) -> SoftTargets: ...


def smooth_labels(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    alpha: float = 0.1,
    *,
    prior: Tensor | None = None,
    ignore_index: int | None = None,
    dim: int = 1,
    convention: str = "uniform",
    allow_negative: bool = False,
) -> Tensor | SoftTargets:
    r"""Dense label-smoothed targets for ``logits``.

    .. math::
        q = (1 - \alpha) \cdot t + \alpha \cdot u \cdot \textstyle\sum_c t_c

    where ``t`` is the one-hot of index ``targets`` (or the dense ``targets``
    themselves) and ``u`` is uniform (``1 / C``) or ``prior``. The factor
    :math:`\sum_c t_c` keeps all-zero rows (ignored positions) all zero.

    Args:
        logits: ``(N, C)`` or ``(N, C, d1, ..., dK)``; only its shape, dtype and
            device are used. The class dimension is ``dim``.
        targets: class indices of the logits' shape without ``dim``, or dense
            probabilities of the logits' shape (e.g. from MixUp; an integer or
            bool one-hot of that shape is cast), or
            :class:`~labelsmooth.SoftTargets`, which come back as SoftTargets
            smoothed further (``SoftTargets.smooth``; no dense tensor is built,
            call ``.to_dense()`` for one).
        alpha: smoothing mass in [0, 1], or in [-1, 0) with ``allow_negative``.
        prior: length-C distribution to smooth towards instead of uniform.
        ignore_index: index targets equal to it become all-zero rows.
        dim: the class dimension.
        convention: ``"uniform"`` (``alpha / C`` on every class) or ``"others"``
            (``1 - alpha`` on the true class, ``alpha / (C - 1)`` elsewhere).
        allow_negative: accept a negative ``alpha`` (negative label smoothing,
            Wei et al. 2022): the true class gets up to ``2 - 1 / C``
            (``"uniform"``) or 2 (``"others"``) and every other class a
            negative entry, so the result is no longer a distribution; see
            :func:`labelsmooth.cross_entropy` for what that does to the loss.
            SoftTargets take an effective ``"uniform"`` alpha in [-1, 1] only.

    Returns:
        Dense targets of the logits' shape, in the logits' dtype (float32 for
        16-bit logits), on the logits' device.

    Example:
        >>> import torch
        >>> smooth_labels(torch.zeros(1, 4), torch.tensor([2]), alpha=0.2)
        tensor([[0.0500, 0.0500, 0.8500, 0.0500]])

        >>> smooth_labels(torch.zeros(1, 4), torch.tensor([2]), alpha=-0.2, allow_negative=True)
        tensor([[-0.0500, -0.0500,  1.1500, -0.0500]])

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer
        Vision", 2016. Wei et al., "To Smooth or Not? When Label Smoothing Meets
        Noisy Labels", ICML 2022 (negative smoothing).
    """
    logits, dim = v.check_logits(logits, dim)
    ignore_index = v.check_optional_int(ignore_index, "ignore_index")
    alpha, prior = _smoothing_arg_validation(alpha, prior, convention, logits.shape[dim], allow_negative)
    if isinstance(targets, SoftTargets):
        return _smooth_soft_targets(targets, alpha, prior)
    if v.target_form(logits, targets, dim) == "index":
        v.check_index_values(targets, logits.shape[dim], ignore_index)
        return _index_to_dense(logits, targets, alpha, prior, ignore_index, dim)
    v.check_dense_values(targets)
    return _smooth_dense(logits, targets, alpha, prior, dim)


def _smoothing_arg_validation(
    alpha: float, prior: Tensor | None, convention: str, num_classes: int, allow_negative: bool
) -> tuple[float, Tensor | None]:
    """The checked options of :func:`smooth_labels`: ``(uniform-convention alpha, prior)``."""
    alpha = v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    convention = v.check_convention(convention)
    prior = v.check_class_vector(prior, "prior", num_classes, distribution=True)
    check_prior_convention(prior, convention)
    return effective_alpha(alpha, num_classes, convention), prior


def _smooth_soft_targets(targets: SoftTargets, alpha: float, prior: Tensor | None) -> SoftTargets:
    # Structured in, structured out: smoothing composes without a dense tensor.
    if not -1.0 <= alpha <= 1.0:
        expected = "an effective alpha in [-1, 1] for SoftTargets (convention='others' leaves it)"
        raise v.fail("alpha", expected, alpha)
    # alpha < 0 was allowed by the caller's flag, checked above.
    return targets.smooth(alpha, prior=prior, allow_negative=alpha < 0)


def _smooth_dense(logits: Tensor, targets: Tensor, alpha: float, prior: Tensor | None, dim: int) -> Tensor:
    """``(1 - alpha) t + alpha u sum_c t_c`` for dense ``t`` (checked), in the compute dtype."""
    dtype = compute_dtype(logits.dtype)
    dense = targets.to(device=logits.device, dtype=dtype)
    u = smoothing_distribution(logits.shape[dim], prior, dtype=dtype, device=logits.device)
    return (1.0 - alpha) * dense + alpha * along_dim(u, logits.dim(), dim) * dense.sum(dim, keepdim=True)


def ensure_targets_one_hot(
    logits: Tensor, targets: Tensor | SoftTargets, *, ignore_index: int | None = None, dim: int = 1
) -> Tensor:
    """Dense one-hot targets for ``logits``; dense float ``targets`` are returned as they are.

    An integer or bool one-hot of the logits' shape comes back as floats.

    Index targets equal to ``ignore_index`` become all-zero rows. The one-hot
    has the logits' dtype (float32 for 16-bit logits). See :func:`smooth_labels`
    for the shapes.

    Example:
        >>> import torch
        >>> ensure_targets_one_hot(torch.zeros(2, 3), torch.tensor([0, -1]), ignore_index=-1)
        tensor([[1., 0., 0.],
                [0., 0., 0.]])
    """
    logits, dim = v.check_logits(logits, dim)
    ignore_index = v.check_optional_int(ignore_index, "ignore_index")

    if isinstance(targets, SoftTargets):
        return targets.to_dense(logits.shape[dim], compute_dtype(logits.dtype), dim=dim)
    if v.target_form(logits, targets, dim) == "dense":
        return v.dense_targets(targets, compute_dtype(logits.dtype))
    v.check_index_values(targets, logits.shape[dim], ignore_index)
    return _index_to_dense(logits, targets, 0.0, None, ignore_index, dim)

"""Binary and multi-label cross-entropy with label smoothing (Keras' convention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype

__all__ = ["binary_cross_entropy_with_logits", "smooth_binary_labels"]


def _check_broadcast_vector(value: Tensor | None, arg: str, shape: torch.Size) -> Tensor | None:
    if value is None:
        return None
    value = v.check_tensor(value, arg)
    if not value.is_floating_point():
        raise v.fail(arg, "a floating-point tensor", value.dtype, error=TypeError)
    trailing = zip(reversed(value.shape), reversed(shape), strict=False)
    if value.dim() > len(shape) or any(a not in (1, b) for a, b in trailing):
        raise v.fail(arg, f"a shape that broadcasts to the logits' {tuple(shape)}", tuple(value.shape))
    v.check_values(value, arg)
    return value


def _binary_tensor_validation(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Floating ``logits`` and real ``targets`` of the same shape, or raise naming the argument."""
    logits = v.check_tensor(logits, "logits")
    if not logits.is_floating_point():
        raise v.fail("logits", "a floating-point tensor", logits.dtype, error=TypeError)
    targets = v.check_tensor(targets, "targets")
    if targets.shape != logits.shape:
        raise v.fail("targets", f"the logits' shape {tuple(logits.shape)}", tuple(targets.shape))
    if targets.is_complex():
        raise v.fail("targets", "real values in [0, 1]", targets.dtype, error=TypeError)
    return logits, targets


def smooth_binary_labels(targets: Tensor, alpha: float) -> Tensor:
    """``targets * (1 - alpha) + alpha / 2``: each binary label moves ``alpha / 2`` towards 1/2."""
    return targets * (1.0 - alpha) + alpha / 2.0


def binary_cross_entropy_with_logits(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float = 0.0,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy on logits against label-smoothed binary targets.

    Each entry is its own binary problem (binary or multi-label
    classification). With ``s = sigmoid(logits)`` and the smoothed target
    ``t = targets * (1 - alpha) + alpha / 2`` (Keras' ``label_smoothing``):

    .. math::
        \ell = -w \left[p\, t \log s + (1 - t) \log (1 - s)\right]

    with ``w`` = ``weight`` and ``p`` = ``pos_weight`` (1 when absent), as in
    :func:`torch.nn.functional.binary_cross_entropy_with_logits`, which does
    the computation (it is stable for large ``|logits|``).

    Args:
        logits: any shape, e.g. ``(N, C)`` for ``C`` labels.
        targets: the logits' shape, values in [0, 1] (float, int or bool).
        alpha: smoothing mass in [0, 1].
        weight: rescaling that broadcasts to the logits' shape.
        pos_weight: weight of positive examples, broadcast along the last dim
            (``(C,)`` for ``(N, C)`` logits).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        A scalar, or with ``reduction="none"`` the logits' shape; float32 for
        16-bit logits.

    Example:
        >>> import torch
        >>> logits, targets = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
        >>> round(binary_cross_entropy_with_logits(logits, targets, alpha=0.1).item(), 4)
        0.2951

    References:
        Szegedy et al., "Rethinking the Inception Architecture for Computer
        Vision", 2016. Keras, ``tf.keras.losses.BinaryCrossentropy(label_smoothing=...)``.
    """
    logits, targets = _binary_tensor_validation(logits, targets)
    alpha = v.check_probability(alpha, "alpha")
    reduction = v.check_reduction(reduction)
    weight = _check_broadcast_vector(weight, "weight", logits.shape)
    pos_weight = _check_broadcast_vector(pos_weight, "pos_weight", logits.shape)
    dtype = compute_dtype(logits.dtype)
    target = targets.to(dtype)
    v.check_values(target, "targets", "values", high=1.0)
    return F.binary_cross_entropy_with_logits(
        logits.to(dtype), smooth_binary_labels(target, alpha),
        weight=None if weight is None else weight.to(dtype),
        pos_weight=None if pos_weight is None else pos_weight.to(dtype),
        reduction=reduction,
    )

"""Figure geometry: the template-plane projection of Müller et al.'s penultimate-layer picture."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype

__all__ = ["template_plane_projection"]


def template_plane_projection(
    features: Tensor, class_weights: Tensor, classes: tuple[int, int, int]
) -> Tensor:
    """Coordinates of ``features`` in the plane through three classes' templates.

    Müller et al. pick three classes ``k1, k2, k3`` and their last-layer weight
    vectors (templates) ``w1, w2, w3``. The plane through the three points has
    the orthonormal basis ``(b1, b2)`` obtained by Gram-Schmidt on
    ``(w2 - w1, w3 - w1)``; a penultimate activation ``x`` maps to
    ``((x - w1) . b1, (x - w1) . b2)``.

    Args:
        features: ``(N, D)`` penultimate-layer activations.
        class_weights: ``(C, D)`` last-layer weights (``nn.Linear.weight``).
        classes: three distinct class indices in ``[0, C)``.

    Returns:
        ``(N, 2)`` coordinates in the features' dtype (float32 for 16-bit).

    Example:
        >>> import torch
        >>> w = torch.eye(3)
        >>> template_plane_projection(w, w, (0, 1, 2)).abs().max() < 2
        tensor(True)

    References:
        Müller, Kornblith and Hinton, "When Does Label Smoothing Help?", 2019.
    """
    features = v.check_tensor(features, "features")
    class_weights = v.check_tensor(class_weights, "class_weights")
    if features.dim() != 2 or not features.is_floating_point():
        raise v.fail("features", "a floating-point tensor of shape (N, D)", tuple(features.shape))
    if class_weights.dim() != 2 or class_weights.shape[1] != features.shape[1]:
        raise v.fail(
            "class_weights", f"a tensor of shape (C, {features.shape[1]})", tuple(class_weights.shape)
        )
    if not isinstance(classes, (tuple, list)) or len(classes) != 3:
        raise v.fail("classes", "three class indices", classes)
    picked = [v.check_int(k, "classes") for k in classes]
    num_classes = class_weights.shape[0]
    if len(set(picked)) != 3 or not all(0 <= k < num_classes for k in picked):
        raise v.fail("classes", f"three distinct class indices in [0, {num_classes})", tuple(classes))
    dtype = torch.float64
    templates = class_weights.detach().to(dtype)[picked]
    first = templates[1] - templates[0]
    second = templates[2] - templates[0]
    b1 = first / first.norm()
    residual = second - (second @ b1) * b1
    if float(first.norm()) == 0.0 or float(residual.norm()) <= 1e-12 * float(second.norm() + 1):
        raise v.fail("class_weights", "three templates that span a plane (not collinear)", tuple(classes))
    b2 = residual / residual.norm()
    basis = torch.stack([b1, b2], dim=1)
    out = (features.detach().to(dtype) - templates[0]) @ basis
    return out.to(compute_dtype(features.dtype))

"""The distribution ``u`` that smoothing mixes in, shared by every target form.

``u`` is uniform (``1 / C`` each) or a caller's ``prior``; index, dense and
structured targets (:mod:`labelsmooth.targets`, :mod:`labelsmooth.soft_targets`)
and the losses build it here, so "uniform" means the same vector everywhere;
the kernels take ``u w`` (``w`` the class weights) from here too.
It sits below both target modules: :mod:`labelsmooth.targets` accepts
``SoftTargets``, and ``SoftTargets`` needs ``u``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["along_dim", "smoothing_distribution", "weighted_distribution"]


def smoothing_distribution(
    num_classes: int, prior: Tensor | None, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The length-C distribution ``u``: ``prior`` in ``dtype`` on ``device``, or uniform ``1 / C``.

    Example:
        >>> smoothing_distribution(4, None, dtype=torch.float32, device=torch.device("cpu"))
        tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    if prior is None:
        return torch.full((num_classes,), 1.0 / num_classes, dtype=dtype, device=device)
    return prior.to(dtype=dtype, device=device)


def weighted_distribution(
    num_classes: int, prior: Tensor | None, weight: Tensor | None, *, dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """``u_c w_c``: :func:`smoothing_distribution` times the class ``weight`` (``u`` itself
    without one), the smoothing term's mass on each class under PyTorch's index-target rule.

    Example:
        >>> weighted_distribution(2, None, torch.tensor([1.0, 3.0]), dtype=torch.float32,
        ...                       device=torch.device("cpu"))
        tensor([0.5000, 1.5000])
    """
    u = smoothing_distribution(num_classes, prior, dtype=dtype, device=device)
    return u if weight is None else u * weight.to(dtype=dtype, device=device)


def along_dim(vector: Tensor, ndim: int, dim: int) -> Tensor:
    """Reshape a length-C vector so it broadcasts along ``dim`` of an ``ndim``-dim tensor.

    Example:
        >>> along_dim(torch.ones(3), 4, 1).shape
        torch.Size([1, 3, 1, 1])
    """
    shape = [1] * ndim
    shape[dim] = vector.numel()
    return vector.reshape(shape)

"""The dense float64 oracle the tests compare the library against, written once.

Nothing here calls :mod:`labelsmooth`: a target is built as a dense float64
tensor, one-hot from ``F.one_hot``, and the loss is the textbook formula

    loss_i = -sum_c w_c q_ic log p_ic,   p_i = softmax(z_i)

with the mean dividing by the total weighted mass ``sum_i sum_c w_c q_ic``
(PyTorch's rule for index targets; for normalized unweighted targets, the
number of rows). ``dim`` is the class dimension of ``logits`` and of ``q``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _along(vector: Tensor, ndim: int, dim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return vector.reshape(shape)


def one_hot(targets: Tensor, num_classes: int, *, ignore_index: int | None = -100, dim: int = -1) -> Tensor:
    """Float64 one-hot with the classes at ``dim``; positions equal to ``ignore_index`` are all-zero rows."""
    valid = torch.ones_like(targets, dtype=torch.bool) if ignore_index is None else targets != ignore_index
    dense = F.one_hot(torch.where(valid, targets, 0).long(), num_classes).double() * valid.unsqueeze(-1)
    return dense.movedim(-1, dim)


def mixture(
    targets: Tensor, weights: Tensor | None, num_classes: int, *, ignore_index: int | None = -100
) -> Tensor:
    """Float64 ``sum_k lam_k onehot(y_k)`` over the last dim of ``(..., K)`` ``targets``, classes last.

    ``weights`` are the ``lam`` of ``targets``' shape (``None``: 1 each); an ignored component adds nothing.
    """
    lam = torch.ones(targets.shape, dtype=torch.float64) if weights is None else weights.double()
    return (one_hot(targets, num_classes, ignore_index=ignore_index) * lam.unsqueeze(-1)).sum(-2)


def smooth(q: Tensor, alpha: float, *, prior: Tensor | None = None, dim: int = -1) -> Tensor:
    """``(1 - alpha) q + alpha u sum_c q_c``: each row's mass moves towards ``u`` (uniform or ``prior``)."""
    q = q.double()
    num_classes = q.shape[dim]
    u = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    u = u if prior is None else prior.double()
    return (1 - alpha) * q + alpha * _along(u, q.dim(), dim) * q.sum(dim, keepdim=True)


def cross_entropy_rows(logits: Tensor, q: Tensor, *, weight: Tensor | None = None, dim: int = -1) -> Tensor:
    """Per-position ``-sum_c w_c q_c log p_c`` in float64 (the logits' shape without ``dim``)."""
    wq = q.double() if weight is None else q.double() * _along(weight.double(), q.dim(), dim)
    return -(wq * torch.log_softmax(logits.double(), dim=dim)).sum(dim)


def cross_entropy(
    logits: Tensor, q: Tensor, *, weight: Tensor | None = None, dim: int = -1, reduction: str = "mean"
) -> Tensor:
    """:func:`cross_entropy_rows`, reduced; the mean divides by ``sum_i sum_c w_c q_ic``."""
    rows = cross_entropy_rows(logits, q, weight=weight, dim=dim)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    wq = q.double() if weight is None else q.double() * _along(weight.double(), q.dim(), dim)
    return rows.sum() / wq.sum()


def dice_loss(
    logits: Tensor, q: Tensor, *, keep: Tensor | None = None, smooth_term: float = 1e-5, softmax: bool = True
) -> Tensor:
    """Soft Dice per sample and class, ``(N, C)``, in float64, with the classes at dim 1.

    Sums run over the spatial positions where ``keep`` (``(N, *spatial)``) is true;
    the intersection is ``sum min(x, q)``, which equals ``sum x q`` for one-hot ``q``.
    """
    x = torch.softmax(logits.double(), 1) if softmax else logits.double()
    q = q.double()
    if keep is not None:
        mask = keep.unsqueeze(1).double()
        x, q = x * mask, q * mask
    dims = tuple(range(2, logits.dim()))
    inter = torch.minimum(x, q).sum(dims)
    return 1 - (2 * inter + smooth_term) / (x.sum(dims) + q.sum(dims) + smooth_term)

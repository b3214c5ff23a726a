"""The ``nn.Module`` faces of :mod:`labelsmooth.functional`.

Each module checks and stores its options in ``__init__`` and calls its
function in ``forward``; the math lives in the function alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from labelsmooth import _validation as v
from labelsmooth import functional


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`labelsmooth.cross_entropy`; see it for the math and shapes.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss(alpha=0.1)
        >>> loss
        CrossEntropyLoss(alpha=0.1, ignore_index=-100, reduction='mean', convention='uniform', dim=1)
        >>> round(loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])).item(), 4)
        0.3729
    """

    weight: Tensor | None
    prior: Tensor | None

    def __init__(
        self,
        alpha: float = 0.0,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        prior: Tensor | None = None,
        convention: str = "uniform",
        dim: int = 1,
    ) -> None:
        super().__init__()
        v.check_init_args(
            alpha=alpha, reduction=reduction, convention=convention,
            ignore_index=ignore_index, dim=dim,
        )
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.convention = convention
        self.dim = dim
        # Buffers, so ``.to(device)`` moves them with the module.
        self.register_buffer("weight", weight)
        self.register_buffer("prior", prior)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return functional.cross_entropy(
            logits, targets, alpha=self.alpha, weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction, prior=self.prior,
            convention=self.convention, dim=self.dim,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, convention={self.convention!r}, dim={self.dim}"
        )


class LinearCrossEntropyLoss(nn.Module):
    """Module form of :func:`labelsmooth.linear_cross_entropy`; see it for the math and shapes.

    The module stores the options only; the projection is passed per call, so
    it can stay the language model's own ``lm_head.weight``.

    Example:
        >>> import torch
        >>> loss = LinearCrossEntropyLoss(alpha=0.1)
        >>> loss
        LinearCrossEntropyLoss(alpha=0.1, ignore_index=-100, reduction='mean', chunk_size=None)
        >>> weight = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> round(loss(torch.tensor([[1.0, 0.0]]), weight, torch.tensor([0])).item(), 4)
        0.3729
    """

    def __init__(
        self,
        alpha: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        v.check_init_args(alpha=alpha, reduction=reduction, ignore_index=ignore_index)
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.chunk_size = v.check_chunk_size(chunk_size)

    def forward(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None
    ) -> Tensor:
        return functional.linear_cross_entropy(
            hidden, weight, targets, bias=bias, alpha=self.alpha, ignore_index=self.ignore_index,
            reduction=self.reduction, chunk_size=self.chunk_size,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, chunk_size={self.chunk_size}"
        )

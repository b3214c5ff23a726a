"""The ``nn.Module`` faces of :mod:`labelsmooth.functional`.

Each module checks and stores its options in ``__init__`` and calls its
function in ``forward``; the math lives in the function alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from labelsmooth import _validation as v
from labelsmooth import functional
from labelsmooth.binary import binary_cross_entropy_with_logits
from labelsmooth.dice import dice_loss
from labelsmooth.soft_targets import SoftTargets

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "DiceCELoss", "DiceLoss", "LinearCrossEntropyLoss"]


class _CrossEntropyOptions(nn.Module):
    """The options :class:`CrossEntropyLoss` and :class:`LinearCrossEntropyLoss` share, stored
    (after ``v.check_init_args``) and shown in one place."""

    weight: Tensor | None

    def _store(
        self, *, alpha: float, label_smoothing: float, allow_negative: bool, ignore_index: int,
        reduction: str, z_loss: float, softcap: float | None, return_z_loss: bool,
        weight: Tensor | None,
    ) -> None:
        self.alpha = v.check_smoothing(alpha, label_smoothing, allow_negative=allow_negative)
        self.allow_negative = allow_negative
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.z_loss = float(z_loss)
        self.softcap = v.check_softcap(softcap)
        self.return_z_loss = return_z_loss
        # A buffer, so ``.to(device)`` moves it with the module.
        self.register_buffer("weight", weight)

    def _options_repr(self, own: str) -> str:
        """``alpha``, ``ignore_index``, ``reduction``, the subclass's ``own`` options, then the
        allow_negative, z-loss, softcap and return_z_loss options that are not the defaults."""
        parts = [f"alpha={self.alpha}, ignore_index={self.ignore_index}, reduction={self.reduction!r}", own]
        parts += ["allow_negative=True"] if self.allow_negative else []
        parts += [f"z_loss={self.z_loss}"] if self.z_loss else []
        parts += [] if self.softcap is None else [f"softcap={self.softcap}"]
        parts += ["return_z_loss=True"] if self.return_z_loss else []
        return ", ".join(parts)


class CrossEntropyLoss(_CrossEntropyOptions):
    """Module form of :func:`labelsmooth.cross_entropy`; see it for the math and shapes.

    ``label_smoothing`` is PyTorch's name for ``alpha``. ``num_items_in_batch``
    is given per call, as Hugging Face passes it. ``allow_negative=True``
    accepts ``alpha`` in [-1, 0), negative label smoothing, whose loss is
    unbounded below (see the function).

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss(alpha=0.1)
        >>> loss
        CrossEntropyLoss(alpha=0.1, ignore_index=-100, reduction='mean', convention='uniform', dim=1)
        >>> round(loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])).item(), 4)
        0.3729
        >>> CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-4, softcap=30.0)
        CrossEntropyLoss(alpha=0.1, ignore_index=-100, reduction='mean', convention='uniform', dim=1, \
z_loss=0.0001, softcap=30.0)
        >>> CrossEntropyLoss(alpha=-0.2, allow_negative=True)
        CrossEntropyLoss(alpha=-0.2, ignore_index=-100, reduction='mean', convention='uniform', dim=1, \
allow_negative=True)
    """

    prior: Tensor | None

    def __init__(
        self,
        alpha: float = v.UNSET,
        weight: Tensor | None = None,
        ignore_index: int = v.IGNORE_INDEX,
        reduction: str = "mean",
        prior: Tensor | None = None,
        convention: str = "uniform",
        dim: int = 1,
        *,
        label_smoothing: float = v.UNSET,
        allow_negative: bool = False,
        z_loss: float = 0.0,
        softcap: float | None = None,
        return_z_loss: bool = False,
    ) -> None:
        super().__init__()
        v.check_init_args(
            reduction=reduction, convention=convention, ignore_index=ignore_index, dim=dim,
            z_loss=z_loss, softcap=softcap, return_z_loss=return_z_loss, allow_negative=allow_negative,
        )
        self._store(alpha=alpha, label_smoothing=label_smoothing, allow_negative=allow_negative,
                    ignore_index=ignore_index, reduction=reduction, z_loss=z_loss, softcap=softcap,
                    return_z_loss=return_z_loss, weight=weight)
        self.convention = convention
        self.dim = dim
        self.register_buffer("prior", prior)

    def forward(
        self, logits: Tensor, targets: Tensor | SoftTargets, *,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        return functional.cross_entropy(
            logits, targets, alpha=self.alpha, allow_negative=self.allow_negative, weight=self.weight,
            ignore_index=self.ignore_index, reduction=self.reduction, prior=self.prior,
            convention=self.convention, dim=self.dim, z_loss=self.z_loss, softcap=self.softcap,
            return_z_loss=self.return_z_loss, num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return self._options_repr(f"convention={self.convention!r}, dim={self.dim}")


class LinearCrossEntropyLoss(_CrossEntropyOptions):
    """Module form of :func:`labelsmooth.linear_cross_entropy`; see it for the math and shapes.

    The module stores the options only (``weight`` is the class weights, a
    buffer); the projection is passed per call, so it can stay the language
    model's own ``lm_head.weight``.

    Example:
        >>> import torch
        >>> loss = LinearCrossEntropyLoss(alpha=0.1)
        >>> loss
        LinearCrossEntropyLoss(alpha=0.1, ignore_index=-100, reduction='mean', chunk_size=None)
        >>> proj = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> round(loss(torch.tensor([[1.0, 0.0]]), proj, torch.tensor([0])).item(), 4)
        0.3729
    """

    prior: Tensor | None

    def __init__(
        self,
        alpha: float = v.UNSET,
        ignore_index: int = v.IGNORE_INDEX,
        reduction: str = "mean",
        chunk_size: int | None = None,
        *,
        weight: Tensor | None = None,
        label_smoothing: float = v.UNSET,
        allow_negative: bool = False,
        z_loss: float = 0.0,
        softcap: float | None = None,
        return_z_loss: bool = False,
        prior: Tensor | None = None,
        convention: str = "uniform",
    ) -> None:
        super().__init__()
        v.check_init_args(reduction=reduction, ignore_index=ignore_index, z_loss=z_loss,
                          softcap=softcap, return_z_loss=return_z_loss, convention=convention,
                          allow_negative=allow_negative)
        self._store(alpha=alpha, label_smoothing=label_smoothing, allow_negative=allow_negative,
                    ignore_index=ignore_index, reduction=reduction, z_loss=z_loss, softcap=softcap,
                    return_z_loss=return_z_loss, weight=weight)
        self.chunk_size = v.check_chunk_size(chunk_size)
        self.convention = convention
        self.register_buffer("prior", prior)

    def forward(
        self, input: Tensor, linear_weight: Tensor, target: Tensor,
        linear_bias: Tensor | None = None, *, num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        return functional.linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=self.weight,
            alpha=self.alpha, allow_negative=self.allow_negative, ignore_index=self.ignore_index,
            reduction=self.reduction, chunk_size=self.chunk_size, z_loss=self.z_loss, softcap=self.softcap,
            return_z_loss=self.return_z_loss, num_items_in_batch=num_items_in_batch, prior=self.prior,
            convention=self.convention,
        )

    def extra_repr(self) -> str:
        # The convention only when it is not the default: the repr stays PyTorch-like.
        own = f"chunk_size={self.chunk_size}"
        if self.convention != "uniform":
            own += f", convention={self.convention!r}"
        return self._options_repr(own)


class BCEWithLogitsLoss(nn.Module):
    """Module form of :func:`labelsmooth.binary_cross_entropy_with_logits`; see it for the math.

    Example:
        >>> import torch
        >>> loss = BCEWithLogitsLoss(alpha=0.1)
        >>> loss
        BCEWithLogitsLoss(alpha=0.1, reduction='mean')
        >>> round(loss(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.2951
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        alpha: float = 0.0,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        v.check_init_args(alpha=alpha, reduction=reduction)
        self.alpha = float(alpha)
        self.reduction = reduction
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            logits, targets, alpha=self.alpha, weight=self.weight, pos_weight=self.pos_weight,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reduction={self.reduction!r}"


class DiceLoss(nn.Module):
    """Module form of :func:`labelsmooth.dice_loss`; see it for the math and shapes.

    Example:
        >>> DiceLoss(alpha=0.1, ignore_index=255)  # doctest: +NORMALIZE_WHITESPACE
        DiceLoss(alpha=0.1, ignore_index=255, softmax=True, smooth=1e-05, reduction='mean',
                 batch=False, dim=1)
    """

    def __init__(
        self,
        alpha: float = 0.0,
        ignore_index: int | None = None,
        softmax: bool = True,
        smooth: float = 1e-5,
        reduction: str = "mean",
        batch: bool = False,
        dim: int = 1,
    ) -> None:
        super().__init__()
        v.check_init_args(
            alpha=alpha, reduction=reduction, ignore_index=ignore_index, dim=dim,
            smooth=smooth, softmax=softmax, batch=batch,
        )
        self.dim = dim
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.softmax = softmax
        self.smooth = float(smooth)
        self.reduction = reduction
        self.batch = batch

    def forward(self, logits: Tensor, targets: Tensor | SoftTargets) -> Tensor:
        return dice_loss(
            logits, targets, alpha=self.alpha, ignore_index=self.ignore_index, softmax=self.softmax,
            smooth=self.smooth, reduction=self.reduction, batch=self.batch, dim=self.dim,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, softmax={self.softmax}, "
            f"smooth={self.smooth}, reduction={self.reduction!r}, batch={self.batch}, dim={self.dim}"
        )


class DiceCELoss(nn.Module):
    r"""``lambda_ce * cross_entropy + lambda_dice * dice_loss``, smoothing both terms by ``alpha``.

    The cross-entropy term is :func:`labelsmooth.cross_entropy` (index, dense
    or SoftTargets, no dense target built); the Dice term is
    :func:`labelsmooth.dice_loss` on the same smoothed target, with the same
    ignored positions (``ignore_index`` for index targets).

    Args:
        alpha: smoothing mass in [0, 1], applied to both terms.
        weight: ``(C,)`` class weights of the cross-entropy term.
        ignore_index: index target value left out of both terms.
        lambda_ce, lambda_dice: the terms' weights (>= 0).
        smooth, batch: as in :func:`labelsmooth.dice_loss`.
        reduction: ``"mean"`` | ``"sum"`` (the two terms have different
            per-item shapes, so ``"none"`` is not offered).

    Example:
        >>> import torch
        >>> loss = DiceCELoss(alpha=0.1)
        >>> loss.alpha, loss.lambda_ce, loss.lambda_dice
        (0.1, 1.0, 1.0)
        >>> loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)).shape
        torch.Size([])
    """

    weight: Tensor | None

    def __init__(
        self,
        alpha: float = 0.0,
        weight: Tensor | None = None,
        ignore_index: int = v.IGNORE_INDEX,
        lambda_ce: float = 1.0,
        lambda_dice: float = 1.0,
        smooth: float = 1e-5,
        reduction: str = "mean",
        batch: bool = False,
    ) -> None:
        super().__init__()
        v.check_init_args(alpha=alpha, ignore_index=ignore_index)
        self.reduction = v.check_choice(reduction, "reduction", ("mean", "sum"))
        v.check_init_args(smooth=smooth, batch=batch)
        v.check_nonnegative(lambda_ce, "lambda_ce")
        v.check_nonnegative(lambda_dice, "lambda_dice")
        self.alpha = float(alpha)
        self.ignore_index = ignore_index
        self.lambda_ce = float(lambda_ce)
        self.lambda_dice = float(lambda_dice)
        self.smooth = float(smooth)
        self.batch = batch
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, targets: Tensor | SoftTargets) -> Tensor:
        ce = functional.cross_entropy(
            logits, targets, alpha=self.alpha, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
        dice = dice_loss(
            logits, targets, alpha=self.alpha, ignore_index=self.ignore_index, smooth=self.smooth,
            reduction=self.reduction, batch=self.batch,
        )
        return self.lambda_ce * ce + self.lambda_dice * dice

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, ignore_index={self.ignore_index}, lambda_ce={self.lambda_ce}, "
            f"lambda_dice={self.lambda_dice}, smooth={self.smooth}, reduction={self.reduction!r}"
        )

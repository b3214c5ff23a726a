"""Soft Dice loss with label smoothing and ignored pixels that stay ignored."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.soft_targets import SoftTargets
from labelsmooth.targets import smooth_labels

__all__ = ["dice_loss"]


def _dense_targets(
    logits: Tensor, targets: Tensor | SoftTargets, alpha: float, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Smoothed dense targets (class dim 1) and each position's mass (0 where ignored)."""
    num_classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if isinstance(targets, SoftTargets):
        if targets.batch_shape != logits.shape[:1] + logits.shape[2:]:
            raise v.fail("targets", "SoftTargets of the logits' batch shape", tuple(targets.batch_shape))
        dense = targets.smooth(alpha).to(logits.device).to_dense(num_classes, dtype)
    else:
        # smooth_labels checks the targets' form and values (once); ignored positions come
        # back as all-zero rows, also after smoothing.
        dense = smooth_labels(logits, targets, alpha, ignore_index=ignore_index)
    return dense, dense.sum(1, keepdim=True)


def _class_dim_first(logits: Tensor, targets: Tensor | SoftTargets, dim: int
                     ) -> tuple[Tensor, Tensor | SoftTargets]:
    """Checked ``(N, C, ...)`` logits with the classes moved to dim 1 (dense targets too)."""
    logits, dim = v.check_logits(logits, dim)
    if logits.dim() < 2:
        raise v.fail("logits", "a tensor of shape (N, C, ...)", tuple(logits.shape))
    if dim != 1:
        if dim == 0:
            raise v.fail("dim", "a class dimension after the batch dimension 0", dim)
        if isinstance(targets, Tensor) and targets.shape == logits.shape:
            targets = targets.movedim(dim, 1)
        logits = logits.movedim(dim, 1)
    return logits, targets


def _dice_compute(logits: Tensor, target: Tensor, mass: Tensor, *, softmax: bool, smooth: float,
                  batch: bool) -> Tensor:
    """The unreduced loss, ``(N, C)`` (``(C,)`` with ``batch``), of class-dim-1 inputs."""
    dtype = compute_dtype(logits.dtype)
    probs = torch.softmax(logits.to(dtype), dim=1) if softmax else logits.to(dtype)
    # Ignored positions (mass 0) drop out of the prediction too; a position whose
    # MixUp partner is ignored counts with its remaining mass, as in cross_entropy.
    probs = probs * mass
    dims = tuple(range(2, logits.dim()))
    if batch:
        dims = (0, *dims)
    size = probs.sum(dims) + target.sum(dims) if dims else probs + target
    diff = (probs - target).abs()
    diff = diff.sum(dims) if dims else diff
    # The L1 form of the intersection: equal to sum(x * y) for one-hot y.
    return 1.0 - (size - diff + smooth) / (size + smooth)


def dice_loss(
    logits: Tensor,
    targets: Tensor | SoftTargets,
    *,
    alpha: float = 0.0,
    ignore_index: int | None = None,
    softmax: bool = True,
    smooth: float = 1e-5,
    reduction: str = "mean",
    batch: bool = False,
    dim: int = 1,
) -> Tensor:
    r"""Soft Dice loss, one minus the Dice coefficient per sample and class.

    With ``x = softmax(logits)`` over the class dim 1 (or ``logits`` themselves
    when ``softmax=False``), the smoothed target ``y = (1 - alpha) t + alpha u sum_c t_c``
    (:func:`~labelsmooth.smooth_labels`), and sums over the positions that are not ignored:

    .. math::
        I = \tfrac12\left(\lVert x\rVert_1 + \lVert y\rVert_1 - \lVert x - y\rVert_1\right),\qquad
        \ell = 1 - \frac{2 I + s}{\lVert x\rVert_1 + \lVert y\rVert_1 + s}

    For one-hot ``y`` and ``x`` in [0, 1], ``I = sum(x * y)``, the usual
    intersection. For soft ``y`` (smoothing, MixUp, CutMix) the product form
    is not minimal at ``x = y``; this form is (``ell = 0`` exactly there), so
    smoothing does not push predictions towards hard labels.

    Positions whose target is ignored (``ignore_index``, or rows with no mass:
    all-ignored :class:`~labelsmooth.SoftTargets` or all-zero dense rows) are
    left out of every sum, for the prediction as well as for the target, also
    after smoothing. In general the prediction at a position is weighted by its
    target's mass (1 for ordinary rows; less where a mixed-in component is
    ignored), so the minimum stays at prediction == normalized target.

    Args:
        logits: ``(N, C, d1, ..., dK)``; with ``softmax=False`` probabilities.
        targets: class indices ``(N, d1, ..., dK)``, dense ``(N, C, d1, ..., dK)``
            or ``SoftTargets``.
        alpha: smoothing mass in [0, 1] (composes with SoftTargets' own).
        ignore_index: index target value left out (index targets).
        softmax: apply a softmax over dim 1 first.
        smooth: ``s``, added to numerator and denominator (keeps empty classes at 0 loss).
        reduction: ``"none"`` (``(N, C)``, or ``(C,)`` with ``batch``) | ``"mean"`` | ``"sum"``.
        batch: sum over the batch too (one Dice per class), as MONAI's ``batch=True``.
        dim: the class dimension (``-1`` for channels-last); the rest of this
            docstring writes it as dim 1.

    Returns:
        The loss, float32 for 16-bit logits.

    Example:
        >>> import torch
        >>> target = torch.tensor([[0, 1], [1, 1]]).unsqueeze(0)
        >>> logits = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20
        >>> dice_loss(logits, target) < 1e-6
        tensor(True)

    References:
        Milletari, Navab and Ahmadi, "V-Net", 2016. Wang, Blaschko et al.,
        "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels", 2023.
    """
    logits, targets = _class_dim_first(logits, targets, dim)
    alpha = v.check_probability(alpha, "alpha")
    ignore_index = v.check_optional_int(ignore_index, "ignore_index")
    reduction = v.check_reduction(reduction)
    v.check_init_args(softmax=softmax, batch=batch)
    smooth = v.check_nonnegative(smooth, "smooth")
    target, mass = _dense_targets(logits, targets, alpha, ignore_index)
    loss = _dice_compute(logits, target, mass, softmax=softmax, smooth=smooth, batch=batch)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()

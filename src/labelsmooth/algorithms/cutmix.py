"""The ``CutMix`` algorithm: paste a box of another example, mix the targets by its area."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.algorithms.mixing import Mixing
from labelsmooth.algorithms.state import BatchKey, State
from labelsmooth.algorithms.target_pipeline import TargetOp
from labelsmooth.soft_targets import SoftTargets

__all__ = ["CutMix", "random_box"]


def random_box(
    height: int, width: int, lam: float, rng: np.random.Generator, *, uniform_sampling: bool
) -> tuple[int, int, int, int]:
    """A box ``(top, left, bottom, right)`` covering about ``1 - lam`` of the image.

    The centre is uniform over the image (Yun et al.'s code), or with
    ``uniform_sampling`` over the image grown by half the box, so that every
    pixel is equally likely to be covered. Clipping can make it smaller.
    """
    cut = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * cut), int(width * cut)
    if uniform_sampling:
        cy = int(rng.integers(-(cut_h // 2), height + cut_h // 2 + 1))
        cx = int(rng.integers(-(cut_w // 2), width + cut_w // 2 + 1))
    else:
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    left, right = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return top, left, bottom, right


def _is_dense_prediction(targets: Any, inputs: Tensor) -> bool:
    """Targets with the inputs' spatial size: index ``(N, H, W)`` or dense ``(N, C, H, W)``."""
    spatial = tuple(inputs.shape[2:])
    if isinstance(targets, SoftTargets):
        return tuple(targets.batch_shape[1:]) == spatial and len(spatial) > 0
    if not isinstance(targets, Tensor) or not spatial:
        return False
    shape = tuple(targets.shape)
    return shape[1:] == spatial or (targets.is_floating_point() and shape[2:] == spatial)


class CutMix(Mixing):
    """Paste a box from another example into each input (Yun et al., 2019).

    At ``BEFORE_FORWARD`` it draws ``lam ~ Beta(alpha, alpha)``, a batch
    permutation ``perm`` and one box covering about ``1 - lam`` of the image,
    and builds a new input with ``x[perm]`` inside the box. For classification
    the targets become ``(1 - area) * t + area * t[perm]``, ``area`` being the
    box's actual share of the image. For segmentation (targets with the
    input's spatial size) the box is pasted into a new target map instead.
    Smoothing by :class:`~labelsmooth.LabelSmoothing` composes with it in any
    list order, and the original targets are back after ``AFTER_LOSS``.
    Inputs are ``(N, C, H, W)`` (the box is over dims 2 and 3).

    The arguments are Composer's, in Composer's order, so
    ``CutMix(1.0, True)`` interpolates the loss in both libraries. With
    ``interpolate_loss=True`` the targets are left unmixed (smoothed when
    smoothing is on) and at ``AFTER_LOSS`` the loss becomes
    ``(1 - area) * loss + area * loss_fn(outputs, targets[perm])``, as
    :class:`~labelsmooth.MixUp` does; a pasted target map (segmentation)
    cannot be interpolated that way and raises ``ValueError``, as in Composer.

    Args:
        alpha: Beta concentration (>= 0; 0 gives an empty box).
        interpolate_loss: interpolate two losses instead of mixing the targets.
        uniform_sampling: every pixel equally likely to be covered.
        input_key, target_key: where the inputs and targets are in the batch.
        materialize: dense targets (``True``) or :class:`~labelsmooth.SoftTargets`.
        ignore_index: index value of ignored pixels; ``None`` means -100.
        loss_fn: ``loss_fn(outputs, targets)`` for ``interpolate_loss``; when
            absent, ``state.model.loss(outputs, batch)`` (Composer's rule).
        seed, generator: where ``lam``, ``perm`` and the box come from.

    Attributes:
        mixing: the latest box area share (the weight of ``t[perm]``).
        permutation, box: the latest ``perm`` and ``(top, left, bottom, right)``.

    Example:
        >>> import torch
        >>> from labelsmooth import Engine, Event, State
        >>> y = torch.zeros(2, 4, 4, dtype=torch.long)
        >>> state = State(batch=(torch.zeros(2, 3, 4, 4), y))
        >>> engine = Engine(state, [CutMix(1.0, seed=0, materialize=False)])
        >>> engine.run_event(Event.BEFORE_FORWARD) and None
        >>> state.outputs = torch.zeros(2, 5, 4, 4)
        >>> with engine.loss_events():
        ...     print(state.batch[1])
        SoftTargets(batch_shape=(2, 4, 4), components=1, alpha=0.0, num_classes=5, ignore_index=-100)
        >>> state.batch[1] is y
        True

    References:
        Yun, Han, Oh, Chun, Choe and Yoo, "CutMix: Regularization Strategy to
        Train Strong Classifiers with Localizable Features", 2019.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        interpolate_loss: bool = False,
        uniform_sampling: bool = False,
        input_key: BatchKey = 0,
        target_key: BatchKey = 1,
        *,
        materialize: bool = True,
        ignore_index: int | None = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            alpha, input_key, target_key, interpolate_loss=interpolate_loss, materialize=materialize,
            ignore_index=ignore_index, loss_fn=loss_fn, seed=seed, generator=generator,
        )
        self.uniform_sampling = v.check_flag(uniform_sampling, "uniform_sampling")
        self.box: tuple[int, int, int, int] | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return {**super().hparams, "uniform_sampling": self.uniform_sampling}

    def mix(self, state: State, inputs: Tensor) -> Tensor:
        if inputs.dim() != 4:
            raise v.fail("inputs", "images of shape (N, C, H, W)", tuple(inputs.shape))
        n, _, height, width = inputs.shape
        rng = self.numpy_rng()
        lam = float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
        perm = self.draw_permutation(n).to(inputs.device)
        top, left, bottom, right = random_box(height, width, lam, rng, uniform_sampling=self.uniform_sampling)
        self.box = (top, left, bottom, right)
        self.mixing = (bottom - top) * (right - left) / (height * width)
        mask = torch.zeros((1, height, width), dtype=torch.bool, device=inputs.device)
        mask[:, top:bottom, left:right] = True
        if _is_dense_prediction(state.batch_get_item(self.target_key), inputs):
            if self.interpolate_loss:
                raise v.fail(
                    "interpolate_loss",
                    "False for targets with the inputs' height and width (the box is pasted into them)",
                    True,
                )
            self.add_op(state, TargetOp(self, "paste", perm=perm, mask=mask))
        else:
            op = TargetOp(self, "mix", perm=perm, lam=self.mixing, interpolated=self.interpolate_loss)
            self.add_op(state, op)
        # A new tensor: the caller's inputs are never written.
        return torch.where(mask.unsqueeze(1), inputs[perm], inputs)

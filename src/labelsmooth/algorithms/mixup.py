"""The ``MixUp`` algorithm: convex combinations of pairs of examples and of their targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from labelsmooth.algorithms.mixing import Mixing
from labelsmooth.algorithms.state import BatchKey, State
from labelsmooth.algorithms.target_pipeline import TargetOp

__all__ = ["MixUp"]


class MixUp(Mixing):
    """Train on convex combinations of pairs of examples (Zhang et al., 2018).

    At ``BEFORE_FORWARD`` it draws ``lam ~ Beta(alpha, alpha)`` and a batch
    permutation ``perm``, and replaces the input by
    ``(1 - lam) * x + lam * x[perm]`` (a new tensor). At ``BEFORE_LOSS`` the
    targets become ``(1 - lam) * t + lam * t[perm]`` (with any smoothing by
    :class:`~labelsmooth.LabelSmoothing`, in either list order); at
    ``AFTER_LOSS`` the original targets are restored.

    With ``interpolate_loss=True`` the targets are left unmixed (but smoothed
    when smoothing is on), and at ``AFTER_LOSS`` the loss becomes
    ``(1 - lam) * loss + lam * loss_fn(outputs, targets[perm])``, where the
    permuted targets carry the same smoothing. For cross-entropy this equals
    the loss on the mixed target.

    Args:
        alpha: Beta concentration (>= 0; 0 means no mixing).
        interpolate_loss: interpolate two losses instead of mixing the targets.
        input_key, target_key: where the inputs and targets are in the batch.
        materialize: ``True`` leaves dense targets for any loss; ``False``
            leaves :class:`~labelsmooth.SoftTargets` for index targets.
        ignore_index: index value of ignored positions (also used by
            ``materialize=False`` targets); ``None`` means -100.
        loss_fn: ``loss_fn(outputs, targets)`` for ``interpolate_loss``; when
            absent, ``state.model.loss(outputs, batch)`` (Composer's rule).
        seed, generator: where ``lam`` and ``perm`` come from (``None``: the
            global torch generator).

    Attributes:
        mixing: the latest ``lam``.
        permutation: the latest ``perm``.

    Example:
        >>> import torch
        >>> from labelsmooth import Engine, Event, LabelSmoothing, State
        >>> state = State(batch=(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])))
        >>> engine = Engine(state, [LabelSmoothing(0.1, materialize=False), MixUp(seed=0, materialize=False)])
        >>> engine.run_event(Event.BEFORE_FORWARD) and None
        >>> state.outputs = torch.zeros(4, 3)
        >>> with engine.loss_events():
        ...     print(state.batch[1])
        SoftTargets(batch_shape=(4,), components=2, alpha=0.1, num_classes=3, ignore_index=-100)
        >>> state.batch[1]
        tensor([0, 1, 2, 0])

    References:
        Zhang, Cisse, Dauphin and Lopez-Paz, "mixup: Beyond Empirical Risk
        Minimization", 2018.
    """

    def __init__(
        self,
        alpha: float = 0.2,
        interpolate_loss: bool = False,
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

    def mix(self, state: State, inputs: Tensor) -> Tensor:
        self.mixing = float(self.numpy_rng().beta(self.alpha, self.alpha)) if self.alpha > 0 else 0.0
        perm = self.draw_permutation(inputs.shape[0]).to(inputs.device)
        op = TargetOp(self, "mix", perm=perm, lam=self.mixing, interpolated=self.interpolate_loss)
        self.add_op(state, op)
        # A new tensor: the caller's inputs are never written.
        return (1.0 - self.mixing) * inputs + self.mixing * inputs[perm]

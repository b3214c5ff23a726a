"""The ``LabelSmoothing`` algorithm: smoothed targets between ``BEFORE_LOSS`` and ``AFTER_LOSS``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import BatchKey, State
from labelsmooth.targets import smooth_labels


def logits_of(outputs: Any) -> Tensor:
    """The logits in a model's outputs: a Tensor, a ``"logits"`` entry, or a ``logits`` attribute."""
    if isinstance(outputs, Tensor):
        return outputs
    logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise v.fail(
        "state.outputs", "a Tensor, a dict with 'logits' or an object with .logits",
        type(outputs).__name__, error=TypeError,
    )


#: Marks ``alpha`` as not given, so ``smoothing=`` can stand in for it and an
#: explicit ``alpha=None`` is still refused.
_UNSET: Any = object()


class LabelSmoothing(Algorithm):
    """Replace the batch's targets by smoothed targets for the loss, then put them back.

    At ``BEFORE_LOSS`` the targets at ``target_key`` become
    ``smooth_labels(logits, targets, alpha)`` (dense, with the logits' shape);
    at ``AFTER_LOSS`` the original target object is restored. Nothing the user
    passed in is written in place. See :func:`labelsmooth.smooth_labels` for
    the math, ``ignore_index`` and ``convention``.

    Args:
        alpha: smoothing mass in [0, 1], default 0.1; ``smoothing=`` is accepted as an alias
            (Composer's later name).
        target_key: where the targets are in the batch: an index, a dict key, or
            a ``(getter, setter)`` pair.
        materialize: ``True`` leaves a dense tensor that any loss accepts.
        ignore_index: index targets equal to it get all-zero rows.
        prior, convention, dim: as in :func:`labelsmooth.smooth_labels`.

    Example:
        >>> import torch
        >>> from labelsmooth import Engine, Event, State
        >>> state = State(batch=(torch.zeros(2, 3), torch.tensor([0, 2])), outputs=torch.zeros(2, 3))
        >>> engine = Engine(state, [LabelSmoothing(0.3)])
        >>> with engine.loss_events():
        ...     print(state.batch[1])
        tensor([[0.8000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.8000]])
        >>> state.batch[1]
        tensor([0, 2])
    """

    def __init__(
        self,
        alpha: float = _UNSET,
        target_key: BatchKey = 1,
        *,
        materialize: bool = True,
        smoothing: float | None = None,
        ignore_index: int | None = None,
        prior: Tensor | None = None,
        convention: str = "uniform",
        dim: int = 1,
    ) -> None:
        if alpha is not _UNSET and smoothing is not None:
            raise v.fail("smoothing", "either alpha or its alias smoothing, not both", smoothing)
        if alpha is _UNSET:
            alpha = 0.1 if smoothing is None else smoothing
        v.check_init_args(alpha=alpha, convention=convention, ignore_index=ignore_index, dim=dim)
        if not isinstance(materialize, bool):
            raise v.fail("materialize", "True or False", materialize, error=TypeError)
        if not materialize:
            # Structured targets arrive with the composition work (SoftTargets).
            raise v.fail("materialize", "True until SoftTargets exists", materialize)
        self.alpha = float(alpha)
        self.target_key = target_key
        self.materialize = materialize
        self.ignore_index = ignore_index
        self.prior = prior
        self.convention = convention
        self.dim = dim
        self._original: list[Any] = []

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "target_key": self.target_key, "materialize": self.materialize,
            "ignore_index": self.ignore_index, "convention": self.convention, "dim": self.dim,
        }

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event is Event.BEFORE_LOSS:
            targets = state.batch_get_item(self.target_key)
            smoothed = smooth_labels(
                logits_of(state.outputs), targets, self.alpha, prior=self.prior,
                ignore_index=self.ignore_index, dim=self.dim, convention=self.convention,
            )
            self._original.append(targets)
            state.batch_set_item(self.target_key, smoothed)
        elif self._original:
            state.batch_set_item(self.target_key, self._original.pop())

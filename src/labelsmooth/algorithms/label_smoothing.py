"""The ``LabelSmoothing`` algorithm: smoothed targets between ``BEFORE_LOSS`` and ``AFTER_LOSS``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import BatchKey, State, logits_of
from labelsmooth.algorithms.target_pipeline import (
    TargetOp,
    TargetPipeline,
    TargetTransform,
)
from labelsmooth.schedules import Schedule, alpha_at, check_alpha, plain_hparams
from labelsmooth.soft_targets import same_prior

__all__ = ["LabelSmoothing"]


class LabelSmoothing(TargetTransform):
    """Replace the batch's targets by smoothed targets for the loss, then put them back.

    At ``BEFORE_LOSS`` the targets at ``target_key`` become
    ``(1 - alpha) * t + alpha * u``; at ``AFTER_LOSS`` the original target
    object is restored. Nothing the user passed in is written in place. See
    :func:`labelsmooth.smooth_labels` for the math, ``ignore_index`` and
    ``convention``.

    It composes with :class:`~labelsmooth.MixUp` and :class:`~labelsmooth.CutMix`
    in any list order: all three record linear operations on one
    :class:`~labelsmooth.algorithms.target_pipeline.TargetPipeline` per batch,
    and smoothing commutes with mixing, so the loss is computed on
    ``(1 - a) * ((1 - lam) * onehot(y) + lam * onehot(y[perm])) + a * u`` and
    the batch holds the original targets again after ``AFTER_LOSS``.

    Args:
        alpha: smoothing mass in [0, 1], default 0.1, or a
            :class:`~labelsmooth.schedules.Schedule` of the step or
            epoch (read at every ``BEFORE_LOSS``); ``smoothing=`` is accepted
            as an alias (Composer's later name). Negative values (a float in
            [-1, 0), or a schedule that goes below 0) need ``allow_negative``.
        target_key: where the targets are in the batch: an index, a dict key, or
            a ``(getter, setter)`` pair.
        materialize: ``True`` leaves a dense tensor that any loss accepts;
            ``False`` leaves :class:`~labelsmooth.SoftTargets` (index targets)
            for the losses of this library, with no ``N x C`` tensor. Dense
            targets stay dense. If any algorithm on the same targets
            materializes, the result is dense.
        ignore_index: index targets equal to it get all-zero rows.
        prior, convention, dim: as in :func:`labelsmooth.smooth_labels`.
        task: ``"multiclass"`` (default): one class per position, smoothed
            towards ``u``. ``"multilabel"``: the targets are multi-hot floats
            with the logits' shape, one independent binary label per entry,
            smoothed to ``y * (1 - alpha) + alpha / 2`` (Keras' convention, the
            target of :func:`labelsmooth.binary_cross_entropy_with_logits`). The
            task is never guessed from the data: a multi-hot row and a MixUp
            row can look alike.
        allow_negative: accept negative smoothing (``task="multiclass"``
            only), Wei et al.'s remedy for heavy label noise. Its loss is
            unbounded below (see :func:`labelsmooth.cross_entropy`), and Wei
            et al. switch it on only after a warm-up with plain cross-entropy:
            pass a schedule that starts at 0, e.g.
            ``schedules.Linear(0.0, -0.2, duration=5, unit="epoch", allow_negative=True)``.
            Select checkpoints on a validation split, never on the test set.
            The loss must accept such targets too: pass ``allow_negative=True``
            to :func:`labelsmooth.cross_entropy` or its module.

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
        alpha: float | Schedule = v.UNSET,
        target_key: BatchKey = 1,
        *,
        materialize: bool = True,
        smoothing: float | Schedule = v.UNSET,
        ignore_index: int | None = None,
        prior: Tensor | None = None,
        convention: str = "uniform",
        dim: int = 1,
        task: str = "multiclass",
        allow_negative: bool = False,
    ) -> None:
        if alpha is not v.UNSET and smoothing is not v.UNSET:
            raise v.fail("smoothing", "either alpha or its alias smoothing, not both", smoothing)
        if alpha is v.UNSET:
            alpha = 0.1 if smoothing is v.UNSET else smoothing
        self.allow_negative = v.check_flag(allow_negative, "allow_negative")
        self.alpha = check_alpha(alpha, allow_negative=allow_negative)
        v.check_init_args(convention=convention, ignore_index=ignore_index, dim=dim)
        self.task = v.check_choice(task, "task", ("multiclass", "multilabel"))
        if allow_negative and self.task == "multilabel":
            expected = "False with task='multilabel' (negative smoothing is for one class per position)"
            raise v.fail("allow_negative", expected, allow_negative)
        self.target_key = target_key
        self.materialize = v.check_flag(materialize, "materialize")
        self.ignore_index = ignore_index
        self.prior = prior
        self.convention = convention
        self.dim = dim
        self._pipeline: TargetPipeline | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "target_key": self.target_key, "materialize": self.materialize,
            "ignore_index": self.ignore_index, "convention": self.convention, "dim": self.dim,
            "task": self.task, "allow_negative": self.allow_negative,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"hparams": plain_hparams(self.hparams)}

    def check_composition(self, algorithms: Sequence[Algorithm]) -> None:
        super().check_composition(algorithms)
        for other in algorithms:
            if (
                isinstance(other, LabelSmoothing) and other is not self
                and other.target_key == self.target_key and self.may_smooth and other.may_smooth
                and (
                    other.task != self.task or other.convention != self.convention
                    or not same_prior(self.prior, other.prior)
                )
            ):
                raise v.fail(
                    "algorithms",
                    "LabelSmoothing instances on one target with the same task, prior and convention "
                    "(smoothing towards two distributions does not compose)",
                    [self, other],
                )

    @property
    def may_smooth(self) -> bool:
        """Whether ``alpha`` can be other than 0 (a schedule may be)."""
        return isinstance(self.alpha, Schedule) or self.alpha != 0

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event is Event.BEFORE_LOSS:
            pipeline = self.join(state)
            if not pipeline.has_op(self):
                # A schedule of the user's own may not state its range: check each value it gives.
                alpha = v.check_smoothing_mass(
                    alpha_at(self.alpha, state), allow_negative=self.allow_negative
                )
                pipeline.ops.append(TargetOp(
                    self, "smooth", alpha=alpha, prior=self.prior,
                    convention=self.convention, multilabel=self.task == "multilabel",
                ))
            self._pipeline = pipeline
            pipeline.render(state, self.target_key, logits_of(state.outputs))
        elif self._pipeline is not None:
            self._pipeline.restore(state, self.target_key)
            self._pipeline = None

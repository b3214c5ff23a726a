"""One record per batch of every change that algorithms make to the targets.

``LabelSmoothing``, ``MixUp`` and ``CutMix`` do not overwrite each other's
targets. Each adds a linear operation (smooth, mix, paste) to the step's
:class:`TargetPipeline`; the batch then holds the original targets with every
operation applied in the order the inputs were changed. Because smoothing
commutes with mixing and pasting, the order of the algorithm list cannot change
the result, and whichever algorithm runs first at ``AFTER_LOSS`` puts the
user's original target object back.

The pipeline lives in ``state.extras`` under :data:`EXTRAS_KEY`, one per target
key. It belongs to the batch whose target object it holds: a batch with other
targets starts a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.state import BatchKey, State
from labelsmooth.soft_targets import SoftTargets
from labelsmooth.targets import effective_alpha, smooth_labels

__all__ = ["EXTRAS_KEY", "TargetOp", "TargetPipeline", "TargetTransform", "current_pipeline", "join_pipeline"]

EXTRAS_KEY = "labelsmooth/target_pipelines"


@dataclass(frozen=True, eq=False)
class TargetOp:
    """One linear change of the targets, made by ``owner``.

    ``kind`` is ``"smooth"`` (``alpha``, ``prior``, ``convention``, ``multilabel``),
    ``"mix"`` (``(1 - lam) * t + lam * t[perm]``) or ``"paste"`` (``t[perm]``
    where ``mask``) or ``"custom"`` (``transform(value, logits, dim)``, for
    an algorithm that keeps the targets to itself, such as
    :class:`~labelsmooth.OnlineLabelSmoothing`). An ``interpolated`` mix is
    left out of the batch's target; its owner interpolates two losses instead.
    """

    owner: Algorithm
    kind: str
    alpha: float = 0.0
    prior: Tensor | None = None
    convention: str = "uniform"
    multilabel: bool = False
    perm: Tensor | None = None
    lam: float = 0.0
    mask: Tensor | None = None
    interpolated: bool = False
    transform: Callable[[Tensor | SoftTargets, Tensor, int], Tensor | SoftTargets] | None = None


def _apply(value: Tensor | SoftTargets, op: TargetOp, logits: Tensor, dim: int) -> Tensor | SoftTargets:
    num_classes = logits.shape[dim]
    if op.kind == "custom":
        if op.transform is None:
            raise v.fail("op.transform", "a callable (value, logits, dim) -> targets", None)
        return op.transform(value, logits, dim)
    if op.kind == "smooth":
        if op.multilabel:
            if isinstance(value, SoftTargets):
                raise v.fail("targets", "multi-hot float targets for task='multilabel'", "class indices")
            # Keras' binary smoothing: y * (1 - alpha) + alpha / 2.
            return value.to(compute_dtype(logits.dtype)) * (1.0 - op.alpha) + op.alpha / 2.0
        # A negative alpha was allowed by the owner's flag when the owner was built.
        negative = op.alpha < 0
        if isinstance(value, SoftTargets):
            alpha = effective_alpha(op.alpha, num_classes, op.convention)
            if not -1.0 <= alpha <= 1.0:
                bound = (num_classes - 1) / num_classes
                expected = f"a value in [{-bound:.6g}, {bound:.6g}] with convention='others'"
                raise v.fail("alpha", expected + " (beyond it SoftTargets cannot hold the target)", op.alpha)
            return value.smooth(alpha, prior=op.prior, allow_negative=negative)
        return smooth_labels(logits, value, op.alpha, prior=op.prior, dim=dim, convention=op.convention,
                             allow_negative=negative)
    if op.perm is None:
        raise v.fail("op.perm", "a batch permutation", None)
    if op.kind == "mix":
        if isinstance(value, SoftTargets):
            return value.mix(op.perm, op.lam)
        return (1.0 - op.lam) * value + op.lam * value[op.perm.to(value.device)]
    if op.mask is None:
        raise v.fail("op.mask", "a bool mask", None)
    if isinstance(value, SoftTargets):
        return value.paste(op.perm, op.mask)
    mask = op.mask.to(value.device).unsqueeze(dim)
    return torch.where(mask, value[op.perm.to(value.device)], value)


@dataclass(eq=False)
class TargetPipeline:
    """The original targets of one batch and the operations applied to them."""

    original: Any
    ignore_index: int = v.IGNORE_INDEX
    dim: int = 1
    ops: list[TargetOp] = field(default_factory=list)
    rendered: Any = None
    rendered_ops: int = 0
    closed: bool = False
    materialize: bool = False

    def has_op(self, owner: Algorithm) -> bool:
        return any(op.owner is owner for op in self.ops)

    def _start(self, logits: Tensor) -> Tensor | SoftTargets:
        target = self.original
        if isinstance(target, SoftTargets):
            return target
        if v.target_form(logits, target, self.dim % logits.dim()) == "index":
            return SoftTargets.from_index(
                target, num_classes=logits.shape[self.dim], ignore_index=self.ignore_index
            )
        return v.dense_targets(target, compute_dtype(logits.dtype))

    def _finish(self, value: Tensor | SoftTargets, logits: Tensor) -> Tensor | SoftTargets:
        if self.materialize and isinstance(value, SoftTargets):
            return value.to_dense(logits.shape[self.dim], compute_dtype(logits.dtype), dim=self.dim)
        return value

    def target(self, logits: Tensor, *, take: TargetOp | None = None) -> Tensor | SoftTargets:
        """The targets with every operation applied, from scratch.

        ``take`` names an interpolated mix to apply with ``lam = 1`` (the
        second term of an interpolated loss).
        """
        value = self._start(logits)
        for op in self.ops:
            if op is take:
                op = TargetOp(op.owner, "mix", perm=op.perm, lam=1.0)
            elif op.interpolated:
                continue
            value = _apply(value, op, logits, self.dim)
        return self._finish(value, logits)

    def render(self, state: State, key: BatchKey, logits: Tensor) -> None:
        """Put the targets with every operation so far into the batch.

        Operations added since the last render are applied to what the batch
        holds, so a list of algorithms builds its dense target once.
        """
        if self.rendered is None:
            value = self._start(logits)
            pending = self.ops
        else:
            value = self.rendered
            pending = self.ops[self.rendered_ops :]
        for op in pending:
            if not op.interpolated:
                value = _apply(value, op, logits, self.dim)
        value = self._finish(value, logits)
        self.rendered, self.rendered_ops = value, len(self.ops)
        state.batch_set_item(key, value)

    def restore(self, state: State, key: BatchKey) -> None:
        """Put the original target object back (once; later calls do nothing)."""
        if not self.closed:
            self.closed = True
            current = state.batch_get_item(key)
            if current is self.rendered or current is self.original:
                state.batch_set_item(key, self.original)


def _pipelines(state: State) -> dict[Any, TargetPipeline]:
    pipelines: dict[Any, TargetPipeline] = state.extras.setdefault(EXTRAS_KEY, {})
    return pipelines


def current_pipeline(state: State, key: BatchKey) -> TargetPipeline | None:
    """The open pipeline of the batch's targets at ``key``, if any."""
    pipeline = _pipelines(state).get(key)
    if pipeline is None or pipeline.closed:
        return None
    current = state.batch_get_item(key)
    if current is pipeline.original or (pipeline.rendered is not None and current is pipeline.rendered):
        return pipeline
    return None


def join_pipeline(
    state: State, key: BatchKey, *, ignore_index: int | None = None, dim: int | None = None,
    materialize: bool = False,
) -> TargetPipeline:
    """The open pipeline of the batch's targets at ``key``, started if there is none."""
    pipeline = current_pipeline(state, key)
    if pipeline is None:
        pipeline = TargetPipeline(state.batch_get_item(key))
        _pipelines(state)[key] = pipeline
    if ignore_index is not None:
        pipeline.ignore_index = ignore_index
    if dim is not None:
        pipeline.dim = dim
    pipeline.materialize |= materialize
    return pipeline


class TargetTransform(Algorithm):
    """An algorithm that changes the targets through the batch's :class:`TargetPipeline`.

    Subclasses set ``target_key``, ``ignore_index`` and ``materialize``;
    :meth:`check_composition` refuses, at the Engine's start-up, lists whose
    target changes cannot be combined.
    """

    target_key: BatchKey
    ignore_index: int | None
    materialize: bool
    interpolate_loss: bool = False
    #: The class dimension, for algorithms that know it (``LabelSmoothing``).
    dim: int | None = None
    #: The ``ignore_index`` and ``dim`` agreed by the Engine's list.
    _shared: dict[str, int | None] | None = None

    def join(self, state: State) -> TargetPipeline:
        """The open pipeline of this batch's targets, with the list's shared options."""
        shared = self._shared or {}
        ignore_index = shared.get("ignore_index", self.ignore_index)
        dim = shared.get("dim", self.dim)
        return join_pipeline(
            state, self.target_key, ignore_index=ignore_index, dim=dim, materialize=self.materialize
        )

    def check_composition(self, algorithms: Sequence[Algorithm]) -> None:
        others = [a for a in algorithms if isinstance(a, TargetTransform) and a.target_key == self.target_key]
        shared: dict[str, int | None] = {}
        for name in ("ignore_index", "dim"):
            values = {getattr(a, name) for a in others if getattr(a, name) is not None}
            if len(values) > 1:
                expected = f"one {name} for the targets at {self.target_key!r}"
                raise v.fail("algorithms", expected, sorted(values))
            shared[name] = values.pop() if values else None
        self._shared = shared
        interpolating = [type(a).__name__ for a in others if a.interpolate_loss]
        if len(interpolating) > 1:
            raise v.fail(
                "algorithms",
                "at most one algorithm with interpolate_loss=True per target (the interpolated "
                "losses of two mixings do not combine)",
                interpolating,
            )

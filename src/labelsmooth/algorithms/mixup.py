"""The ``MixUp`` algorithm: convex combinations of pairs of examples and of their targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.label_smoothing import logits_of
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import BatchKey, State, batch_set
from labelsmooth.algorithms.target_pipeline import (
    TargetOp,
    TargetPipeline,
    TargetTransform,
)


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """The generator an algorithm draws from: ``generator``, a new one seeded with ``seed``, or None.

    ``None`` draws from PyTorch's global generator (``torch.manual_seed``).
    """
    if seed is not None and generator is not None:
        raise v.fail("seed", "either seed or generator, not both", seed)
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise v.fail("generator", "a torch.Generator", type(generator).__name__, error=TypeError)
        return generator
    if seed is None:
        return None
    return torch.Generator().manual_seed(v.check_int(seed, "seed"))


def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator seeded from ``generator`` (for Beta draws, which torch cannot seed)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator).item())
    return np.random.default_rng(seed)


def check_concentration(alpha: object, arg: str = "alpha") -> float:
    """A Beta concentration: a finite real number >= 0 (0 means no mixing)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise v.fail(arg, "a real number >= 0", alpha, error=TypeError)
    value = float(alpha)
    if not np.isfinite(value) or value < 0:
        raise v.fail(arg, "a finite real number >= 0", value)
    return value


def check_flag(value: object, arg: str) -> bool:
    if not isinstance(value, bool):
        raise v.fail(arg, "True or False", value, error=TypeError)
    return value


class MixUp(TargetTransform):
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
        self.alpha = check_concentration(alpha)
        self.interpolate_loss = check_flag(interpolate_loss, "interpolate_loss")
        self.materialize = check_flag(materialize, "materialize")
        self.ignore_index = v.check_optional_int(ignore_index, "ignore_index")
        if loss_fn is not None and not callable(loss_fn):
            raise v.fail("loss_fn", "a callable (outputs, targets) -> loss", loss_fn, error=TypeError)
        self.input_key = input_key
        self.target_key = target_key
        self.loss_fn = loss_fn
        self.seed = seed
        self.generator = make_generator(seed, generator)
        self.mixing = 0.0
        self.permutation: Tensor | None = None
        self._op: TargetOp | None = None
        self._pipeline: TargetPipeline | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "interpolate_loss": self.interpolate_loss, "input_key": self.input_key,
            "target_key": self.target_key, "materialize": self.materialize,
            "ignore_index": self.ignore_index, "seed": self.seed,
        }

    def match(self, event: Event, state: State) -> bool:
        if event is Event.BEFORE_FORWARD:
            return True
        return self._op is not None and event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def _draw(self, batch_size: int) -> tuple[float, Tensor]:
        rng = numpy_rng(self.generator)
        lam = float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 0.0
        return lam, torch.randperm(batch_size, generator=self.generator)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event is Event.BEFORE_FORWARD:
            inputs = v.check_tensor(state.batch_get_item(self.input_key), "inputs")
            self.mixing, perm = self._draw(inputs.shape[0])
            self.permutation = perm
            perm = perm.to(inputs.device)
            mixed = (1.0 - self.mixing) * inputs + self.mixing * inputs[perm]
            pipeline = self.join(state)
            self._op = TargetOp(self, "mix", perm=perm, lam=self.mixing, interpolated=self.interpolate_loss)
            pipeline.ops.append(self._op)
            self._pipeline = pipeline
            state.batch_set_item(self.input_key, mixed)
        elif event is Event.BEFORE_LOSS and self._pipeline is not None:
            self._pipeline.render(state, self.target_key, logits_of(state.outputs))
        elif event is Event.AFTER_LOSS and self._pipeline is not None:
            if self.interpolate_loss:
                self._interpolate(state)
            self._pipeline.restore(state, self.target_key)
            self._pipeline, self._op = None, None

    def _interpolate(self, state: State) -> None:
        if self._pipeline is None or self._op is None:
            return
        if state.loss is None:
            raise v.fail("state.loss", "the loss, set inside Engine.loss_events()", None)
        permuted = self._pipeline.target(logits_of(state.outputs), take=self._op)
        if self.loss_fn is not None:
            second = self.loss_fn(state.outputs, permuted)
        elif hasattr(state.model, "loss"):
            second = state.model.loss(state.outputs, batch_set(state.batch, self.target_key, permuted))
        else:
            raise v.fail(
                "loss_fn", "a loss function for interpolate_loss=True (or a state.model with .loss)", None
            )
        state.loss = (1.0 - self.mixing) * state.loss + self.mixing * second

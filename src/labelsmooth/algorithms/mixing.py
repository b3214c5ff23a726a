"""What MixUp and CutMix share: seeded draws, the event schedule, restoring the targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import BatchKey, State, batch_set, logits_of
from labelsmooth.algorithms.target_pipeline import TargetOp, TargetPipeline, TargetTransform

__all__ = ["Mixing", "make_generator"]


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


class Mixing(TargetTransform):
    """Base of :class:`~labelsmooth.MixUp` and :class:`~labelsmooth.CutMix`.

    At ``BEFORE_FORWARD`` :meth:`mix` changes the inputs and adds its
    operation to the targets' pipeline; at ``BEFORE_LOSS`` the targets are
    rendered; at ``AFTER_LOSS``, with ``interpolate_loss``, the loss becomes
    ``(1 - lam) * loss + lam * loss_fn(outputs, targets[perm])`` (the permuted
    targets carry the same smoothing), and then the original targets are
    restored. The generator's state is part of :meth:`state_dict`, so a
    resumed run draws what the uninterrupted one would have.
    """

    def __init__(
        self, alpha: float, input_key: BatchKey, target_key: BatchKey, *, interpolate_loss: bool,
        materialize: bool, ignore_index: int | None, loss_fn: Callable[[Any, Any], Tensor] | None,
        seed: int | None, generator: torch.Generator | None,
    ) -> None:
        self.alpha = v.check_nonnegative(alpha, "alpha")  # Beta concentration; 0: no mixing
        self.interpolate_loss = v.check_flag(interpolate_loss, "interpolate_loss")
        if loss_fn is not None and not callable(loss_fn):
            raise v.fail("loss_fn", "a callable (outputs, targets) -> loss", loss_fn, error=TypeError)
        self.loss_fn = loss_fn
        self.materialize = v.check_flag(materialize, "materialize")
        self.ignore_index = v.check_optional_int(ignore_index, "ignore_index")
        self.input_key = input_key
        self.target_key = target_key
        self.seed = seed
        self.generator = make_generator(seed, generator)
        #: The latest mixing weight of ``t[perm]`` and the latest permutation.
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

    def numpy_rng(self) -> np.random.Generator:
        """A NumPy generator seeded from ours (Beta draws, which torch cannot seed)."""
        seed = int(torch.randint(0, 2**62, (), generator=self.generator).item())
        return np.random.default_rng(seed)

    def draw_permutation(self, batch_size: int) -> Tensor:
        self.permutation = torch.randperm(batch_size, generator=self.generator)
        return self.permutation

    def add_op(self, state: State, op: TargetOp) -> None:
        self._op = op
        self._pipeline = self.join(state)
        self._pipeline.ops.append(op)

    def match(self, event: Event, state: State) -> bool:
        if event is Event.BEFORE_FORWARD:
            return True
        return self._op is not None and event in (Event.BEFORE_LOSS, Event.AFTER_LOSS)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event is Event.BEFORE_FORWARD:
            inputs = v.check_tensor(state.batch_get_item(self.input_key), "inputs")
            state.batch_set_item(self.input_key, self.mix(state, inputs))
        elif self._pipeline is not None and self._op is not None:
            if event is Event.BEFORE_LOSS:
                self._pipeline.render(state, self.target_key, logits_of(state.outputs))
            else:
                try:
                    if self.interpolate_loss:
                        self.interpolate(state, self._pipeline, self._op)
                finally:  # the original targets come back even when interpolating fails
                    self._pipeline.restore(state, self.target_key)
                    self._pipeline, self._op = None, None

    def mix(self, state: State, inputs: Tensor) -> Tensor:
        """Draw, add the target operation (:meth:`add_op`) and return the new inputs."""
        raise NotImplementedError

    def interpolate(self, state: State, pipeline: TargetPipeline, op: TargetOp) -> None:
        """``state.loss = (1 - lam) * loss + lam * loss_fn(outputs, targets[perm])``, ``lam = self.mixing``.

        ``loss_fn`` is the constructor's, else ``state.model.loss(outputs, batch)``
        (Composer's rule) with the permuted targets in the batch.
        """
        if state.loss is None:
            raise v.fail("state.loss", "the loss, set inside Engine.loss_events()", None)
        permuted = pipeline.target(logits_of(state.outputs), take=op)
        if self.loss_fn is not None:
            second = self.loss_fn(state.outputs, permuted)
        elif hasattr(state.model, "loss"):
            second = state.model.loss(state.outputs, batch_set(state.batch, self.target_key, permuted))
        else:
            raise v.fail(
                "loss_fn", "a loss function for interpolate_loss=True (or a state.model with .loss)", None
            )
        state.loss = (1.0 - self.mixing) * state.loss + self.mixing * second

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

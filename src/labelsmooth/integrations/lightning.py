"""Run labelsmooth's algorithms inside a ``lightning.Trainer``.

Turning label smoothing on takes three lines: the import, the callback, and
the ``with`` around the loss inside ``training_step``::

    from labelsmooth.integrations.lightning import AlgorithmsCallback, loss_events

    class Model(lightning.LightningModule):
        def training_step(self, batch, batch_idx):
            logits = self(batch[0])
            with loss_events(self, batch, logits) as state:   # BEFORE_LOSS ... AFTER_LOSS
                loss = labelsmooth.soft_cross_entropy(logits, state.batch[1])
            return loss

    trainer = lightning.Trainer(callbacks=[AlgorithmsCallback([LabelSmoothing(0.1)])])

MixUp and CutMix change the inputs before the forward pass, so with them the
step goes through :func:`algorithm_step`, which runs forward and loss inside
the algorithms' reach::

    def training_step(self, batch, batch_idx):
        return algorithm_step(self, batch, forward=lambda b: self(b[0]),
                              loss=lambda logits, b: labelsmooth.cross_entropy(logits, b[1]))

    trainer = lightning.Trainer(callbacks=[AlgorithmsCallback([MixUp(0.2), LabelSmoothing(0.1)])])

Where each event runs (a training step in Lightning calls ``training_step``,
then ``backward``):

============================  ==================================================
Lightning                     labelsmooth events
============================  ==================================================
``setup("fit")`` (once)       ``INIT``
``on_fit_start``              ``FIT_START``
``on_train_epoch_start``      ``EPOCH_START``
``on_train_batch_start``      ``BATCH_START``, ``BEFORE_TRAIN_BATCH``
inside ``training_step``      ``BEFORE_FORWARD``, ``AFTER_FORWARD`` (:func:`algorithm_step`);
                              ``BEFORE_LOSS``, ``AFTER_LOSS`` (:func:`loss_events`)
``on_before_backward``        ``BEFORE_BACKWARD`` (``state.loss`` is the loss)
``on_after_backward``         ``AFTER_BACKWARD``
``on_train_batch_end``        ``AFTER_TRAIN_BATCH``, ``BATCH_END``
``on_train_epoch_end``        ``EPOCH_END``
``on_fit_end``                ``FIT_END``
validation loop               ``EVAL_START``, ``EVAL_BATCH_START``, ``EVAL_BATCH_END``, ``EVAL_END``
predict loop                  ``PREDICT_START``, ``PREDICT_BATCH_START``, ``PREDICT_BATCH_END``,
                              ``PREDICT_END``
============================  ==================================================

The loss is computed inside the user's ``training_step``, which no callback
hook can reach, so ``BEFORE_LOSS`` / ``AFTER_LOSS`` (and, for algorithms that
change the inputs, ``BEFORE_FORWARD`` / ``AFTER_FORWARD``) need the user's
code to be wrapped: :func:`loss_events` around the loss, or
:func:`algorithm_step` around forward and loss together. Outside training
(``validation_step``, or a module without the callback) both run no
algorithm, so validation losses stay unsmoothed. Under ``strategy="ddp"``
every process has its own copy of the callback and its algorithms.

:class:`SaveRun` writes the fitted model's run record for ``labelsmooth
compare --runs``: val and test logits with each example's dataset index,
every example once under DDP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from labelsmooth.algorithms import Algorithm, Engine, Event, Logger, State
from labelsmooth.integrations._lightning_run import SaveRun

__all__ = ["AlgorithmsCallback", "SaveRun", "algorithm_step", "loss_events"]


class AlgorithmsCallback(pl.Callback):
    """A Lightning callback that runs ``algorithms`` at the :class:`~labelsmooth.Event`\\ s of the fit.

    Args:
        algorithms: run in list order (reverse order on ``AFTER_*`` events).
        logger: receives the algorithms' traces; a fresh in-memory
            :class:`~labelsmooth.Logger` when omitted.

    The :class:`~labelsmooth.Engine` is ``callback.engine`` and its
    :class:`~labelsmooth.State` is ``callback.engine.state``: ``model`` is the
    LightningModule, ``optimizers`` the trainer's optimizers, and ``epoch``,
    ``step``, ``batch_idx`` follow the trainer.
    """

    def __init__(self, algorithms: Sequence[Algorithm], logger: Logger | None = None) -> None:
        self.engine = Engine(State(), algorithms, logger)
        self._initialized = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.algorithms!r})"

    def _run(self, trainer: pl.Trainer, module: pl.LightningModule, *events: Event) -> None:
        state = self.engine.state
        state.model = module
        state.optimizers = trainer.optimizers
        state.epoch = trainer.current_epoch
        state.step = trainer.global_step
        for event in events:
            self.engine.run_event(event)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not self._initialized:
            self._initialized = True
            self._run(trainer, pl_module, Event.INIT)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.FIT_START)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.FIT_END)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.EPOCH_START)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.EPOCH_END)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.engine.state.batch = batch
        self.engine.state.batch_idx = batch_idx
        self._run(trainer, pl_module, Event.BATCH_START, Event.BEFORE_TRAIN_BATCH)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self.engine.state.loss = loss
        self._run(trainer, pl_module, Event.BEFORE_BACKWARD)

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.AFTER_BACKWARD)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._run(trainer, pl_module, Event.AFTER_TRAIN_BATCH, Event.BATCH_END)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, Event.EVAL_START)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, Event.EVAL_BATCH_START)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, Event.EVAL_BATCH_END)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, Event.EVAL_END)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.PREDICT_START)

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._run(trainer, pl_module, Event.PREDICT_BATCH_START)

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        self._run(trainer, pl_module, Event.PREDICT_BATCH_END)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, Event.PREDICT_END)

    def state_dict(self) -> dict[str, Any]:
        return {"algorithms": [algorithm.state_dict() for algorithm in self.engine.algorithms]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for algorithm, state in zip(self.engine.algorithms, state_dict["algorithms"], strict=False):
            algorithm.load_state_dict(state)


def _training_engine(module: pl.LightningModule) -> Engine | None:
    """The engine of the module's trainer's :class:`AlgorithmsCallback`, while it is training."""
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer
        return None
    if not trainer.training:
        return None
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, AlgorithmsCallback):
            return callback.engine
    return None


@contextmanager
def loss_events(module: pl.LightningModule, batch: Any, outputs: Any) -> Iterator[State]:
    """Run ``BEFORE_LOSS`` on entry and ``AFTER_LOSS`` on exit, around the loss of ``training_step``.

    Compute the loss from ``state.batch`` inside the block: there the
    algorithms' changes are in place (e.g. smoothed targets); after the block
    the original batch is back, also when the block raises. Outside training,
    or without an :class:`AlgorithmsCallback`, no algorithm runs and
    ``state.batch`` is ``batch``.

    Args:
        module: the LightningModule whose ``training_step`` this is.
        batch: the batch the loss reads its targets from.
        outputs: the model's outputs (a Tensor, a dict with ``"logits"``, or an
            object with ``.logits``), which algorithms such as
            :class:`~labelsmooth.LabelSmoothing` read.

    Yields:
        The :class:`~labelsmooth.State` holding ``batch`` and ``outputs``.
    """
    engine = _training_engine(module)
    if engine is None:
        yield State(batch=batch, outputs=outputs)
        return
    engine.state.batch = batch
    engine.state.outputs = outputs
    with engine.loss_events() as state:
        yield state


def algorithm_step(
    module: pl.LightningModule,
    batch: Any,
    *,
    forward: Callable[[Any], Any],
    loss: Callable[[Any, Any], Tensor],
) -> Tensor:
    """A whole training step with every step event: forward and loss inside the algorithms' reach.

    Runs ``BEFORE_FORWARD`` -> ``outputs = forward(batch)`` -> ``AFTER_FORWARD``
    -> ``BEFORE_LOSS`` -> ``loss(outputs, batch)`` -> ``AFTER_LOSS`` and
    returns the loss; ``forward`` and ``loss`` see the batch as the algorithms
    left it (e.g. mixed inputs, smoothed targets). Use it for algorithms that
    change the inputs; :func:`loss_events` is enough for ones that only touch
    the targets.

    Example (inside a LightningModule)::

        def training_step(self, batch, batch_idx):
            return algorithm_step(self, batch, forward=lambda b: self(b[0]),
                                  loss=lambda out, b: labelsmooth.soft_cross_entropy(out, b[1]))
    """
    engine = _training_engine(module)
    if engine is None:
        return loss(forward(batch), batch)
    state = engine.state
    state.batch = batch
    engine.run_event(Event.BEFORE_FORWARD)
    state.outputs = forward(state.batch)
    engine.run_event(Event.AFTER_FORWARD)
    with engine.loss_events():
        state.loss = loss(state.outputs, state.batch)
    result: Tensor = state.loss
    return result

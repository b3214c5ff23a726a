"""One training run on the library's Event/State/Engine protocol, with its per-epoch history."""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from labelsmooth.algorithms import Algorithm, CutMix, Engine, Event, LabelSmoothing, MixUp, State
from labelsmooth.experiments import _config
from labelsmooth.experiments._determinism import deterministic
from labelsmooth.experiments.data import DataSet, fail, flip_labels, in_order, size, take
from labelsmooth.functional import cross_entropy, soft_cross_entropy
from labelsmooth.losses import DiceCELoss
from labelsmooth.schedules import Delayed

__all__ = [
    "EVAL_BATCH",
    "OPTIMIZERS",
    "Checkpoint",
    "ModelFactory",
    "OptimizerFactory",
    "TrainConfig",
    "build_optimizer",
    "deterministic",
    "loss_function",
    "seed_everything",
    "train",
    "validation_scores"
]

OPTIMIZERS = _config.OPTIMIZERS
#: Items per forward pass when evaluating.
EVAL_BATCH = 256
ModelFactory = Callable[[int], nn.Module]
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]


@dataclass(frozen=True)
class TrainConfig:
    """How each run trains; ``compare`` picks defaults per data set (:data:`~._config.PER_DATASET`)."""

    epochs: int
    batch_size: int
    lr: float
    convention: str = "uniform"
    label_noise: float = 0.0
    device: str = "cpu"
    #: Beta concentrations of MixUp and CutMix (``None``: off); they compose with the smoothing.
    mixup: float | None = None
    cutmix: float | None = None
    weight_decay: float = 0.0
    #: ``"adamw"``, ``"adam"``, ``"sgd"`` (momentum 0.9) or ``callable(params) -> Optimizer``.
    optimizer: str | OptimizerFactory = "adamw"
    #: Intra-op threads of every run (the same everywhere, so runs are bit-identical anywhere).
    threads: int = 1
    #: Negative alphas allowed (negative label smoothing); passed to ``LabelSmoothing`` and the loss.
    allow_negative: bool = False
    #: Epochs of plain cross-entropy before the alpha starts (:class:`~labelsmooth.schedules.Delayed`).
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_epochs < self.epochs:
            raise fail("warmup_epochs", f"an int in [0, epochs) = [0, {self.epochs})", self.warmup_epochs)


@dataclass(frozen=True)
class Checkpoint:
    """The weights of the epoch with the lowest validation NLL so far: early stopping's model."""

    #: From 1, as the history counts epochs.
    epoch: int
    val_loss: float
    #: A copy of the model's ``state_dict`` on the CPU, so it costs no accelerator memory.
    state: dict[str, Tensor]

    @classmethod
    def better(cls, best: Checkpoint | None, model: nn.Module, epoch: int,
               val_loss: float | None) -> Checkpoint | None:
        """``best``, or a copy of ``model``'s weights when ``val_loss`` is lower (ties: the earlier epoch
        stays); copying only on improvement keeps the cost at one ``state_dict`` on the CPU."""
        if val_loss is None or not math.isfinite(val_loss):
            return best
        if best is not None and val_loss >= best.val_loss:
            return best
        state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
        return cls(epoch, val_loss, state)

    @contextmanager
    def loaded_into(self, model: nn.Module) -> Iterator[None]:
        """``model`` with these weights inside the ``with`` block, and its own weights back after it
        (the trainers' record writers predict with the best epoch's, then leave the final ones)."""
        own = {key: value.detach().clone() for key, value in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(own)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random``: a user's model or transforms may draw from any of them."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def loss_function(data: DataSet, *, allow_negative: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss on the dense targets ``LabelSmoothing`` leaves (ignored pixels are all-zero rows).

    Cross-entropy for classification; Dice + cross-entropy for segmentation
    (``alpha=0`` here: the algorithm has smoothed the targets already; one Dice
    per class over the batch, as MONAI's ``batch=True``).
    """
    if data.task == "segmentation":
        dice_ce: Callable[[Tensor, Tensor], Tensor] = DiceCELoss(batch=True)
        return dice_ce
    if allow_negative:  # negatively smoothed targets have negative entries, which the loss refuses by default
        return functools.partial(cross_entropy, allow_negative=True)
    return soft_cross_entropy


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s parameters."""
    params = model.parameters()
    if callable(config.optimizer):
        optimizer = config.optimizer(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise fail("optimizer", "a callable(params) returning a torch.optim.Optimizer",
                       f"a {type(optimizer).__name__}")
        return optimizer
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def _algorithms(data: DataSet, alpha: float, seed: int, config: TrainConfig) -> list[Algorithm]:
    smoothing: float | Delayed = alpha
    if config.warmup_epochs:
        smoothing = Delayed(alpha, after=config.warmup_epochs, unit="epoch",
                            allow_negative=config.allow_negative)
    algorithms: list[Algorithm] = [
        LabelSmoothing(smoothing, ignore_index=data.ignore_index, convention=config.convention,
                       allow_negative=config.allow_negative)
    ]
    # Their own generators, so that switching them on leaves the data order of a seed alone.
    if config.mixup is not None:
        algorithms.append(MixUp(config.mixup, ignore_index=data.ignore_index, seed=10_000 + seed))
    if config.cutmix is not None:
        algorithms.append(CutMix(config.cutmix, ignore_index=data.ignore_index, seed=20_000 + seed))
    return algorithms


def _correct(logits: Tensor, targets: Tensor, ignore_index: int | None) -> tuple[Tensor, int | Tensor]:
    """Correct predictions and counted items of a batch (ignored pixels left out); no host sync."""
    hits = logits.detach().argmax(1) == targets
    if ignore_index is None:
        return hits.sum(), targets.numel()
    keep = targets != ignore_index
    return (hits & keep).sum(), keep.sum()


def validation_scores(model: nn.Module, val: Dataset[Any], ignore_index: int | None,
                      device: torch.device) -> tuple[float, float]:
    """``(NLL, accuracy)`` of ``model`` on ``val`` (plain cross-entropy: comparable across alphas)."""
    ignore = ignore_index if ignore_index is not None else -100
    model.eval()
    loss, correct, count = torch.zeros((), dtype=torch.float64), 0, 0
    with torch.no_grad():
        for inputs, targets in in_order(val, EVAL_BATCH):
            targets = targets.to(device)
            logits = model(inputs.to(device))
            loss += F.cross_entropy(logits.double(), targets, ignore_index=ignore, reduction="sum").cpu()
            right, seen = _correct(logits, targets, ignore_index)
            correct, count = correct + int(right), count + int(seen)
    return float(loss) / max(count, 1), correct / max(count, 1)


def _epoch(engine: Engine, data: DataSet, targets: Tensor | None, order: Tensor, config: TrainConfig,
           loss_fn: Callable[[Tensor, Tensor], Tensor],
           on_step: Callable[[], None] | None) -> dict[str, float]:
    """One pass over the training split in ``order``; the mean training loss and accuracy."""
    state, device = engine.state, torch.device(config.device)
    optimizer = state.optimizers[0]
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = seen = torch.zeros((), dtype=torch.int64, device=device)
    for batch_idx, start in enumerate(range(0, len(order), config.batch_size)):
        index = order[start : start + config.batch_size]
        inputs, batch_targets = take(data.train, index)
        if targets is not None:  # label noise: the labels read once, some moved
            batch_targets = targets[index]
        batch_targets = batch_targets.to(device)
        state.batch_idx = batch_idx
        state.batch = (inputs.to(device), batch_targets)
        engine.run_event(Event.BATCH_START)
        engine.run_event(Event.BEFORE_TRAIN_BATCH)
        engine.run_event(Event.BEFORE_FORWARD)
        state.outputs = state.model(state.batch[0])
        engine.run_event(Event.AFTER_FORWARD)
        with engine.loss_events():
            state.loss = loss_fn(state.outputs, state.batch[1])
        engine.run_event(Event.BEFORE_BACKWARD)
        optimizer.zero_grad(set_to_none=True)
        state.loss.backward()
        engine.run_event(Event.AFTER_BACKWARD)
        optimizer.step()
        engine.run_event(Event.AFTER_TRAIN_BATCH)
        state.step += 1
        engine.run_event(Event.BATCH_END)
        total += state.loss.detach().double() * len(index)
        right, counted = _correct(state.outputs, batch_targets, data.ignore_index)
        correct, seen = correct + right, seen + counted
        if on_step is not None:
            on_step()
    return {"train_loss": float(total) / len(order), "train_accuracy": int(correct) / max(int(seen), 1)}


def train(data: DataSet, model_factory: ModelFactory, alpha: float, seed: int, config: TrainConfig,
          on_step: Callable[[], None] | None = None
          ) -> tuple[nn.Module, list[dict[str, float | None]], Checkpoint | None]:
    """Train a fresh ``model_factory(num_classes)`` with ``LabelSmoothing(alpha)``; randomness from ``seed``.

    Returns the model, its history, one entry per epoch: ``train_loss`` (the
    smoothed objective), ``train_accuracy``, ``val_loss`` (NLL) and
    ``val_accuracy`` (``None`` without a validation split), and the
    :class:`Checkpoint` of the epoch with the lowest ``val_loss`` (``None``
    without a validation split: no early stopping). Training stops after an
    epoch whose loss is not finite.
    """
    seed_everything(seed)
    device = torch.device(config.device)
    model = model_factory(data.num_classes).to(device)
    generator = torch.Generator().manual_seed(seed)
    targets = None
    if config.label_noise > 0:
        targets = flip_labels(data.labels["train"], config.label_noise, data.num_classes,
                              generator=generator, ignore_index=data.ignore_index)
    state = State(model=model, optimizers=[build_optimizer(config, model)])
    engine = Engine(state, _algorithms(data, alpha, seed, config))
    loss_fn = loss_function(data, allow_negative=config.allow_negative)
    engine.run_event(Event.INIT)
    engine.run_event(Event.FIT_START)
    history: list[dict[str, float | None]] = []
    best: Checkpoint | None = None
    for epoch in range(config.epochs):
        state.epoch = epoch
        model.train()
        engine.run_event(Event.EPOCH_START)
        order = torch.randperm(size(data.train), generator=generator)
        scores = _epoch(engine, data, targets, order, config, loss_fn, on_step)
        val_loss = val_accuracy = None
        if data.val is not None:
            val_loss, val_accuracy = validation_scores(model, data.val, data.ignore_index, device)
        history.append({"epoch": epoch + 1, **scores, "val_loss": val_loss, "val_accuracy": val_accuracy})
        best = Checkpoint.better(best, model, epoch + 1, val_loss)
        engine.run_event(Event.EPOCH_END)
        if not math.isfinite(scores["train_loss"]):
            break
    engine.run_event(Event.FIT_END)
    return model, history, best

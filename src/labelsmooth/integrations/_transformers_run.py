"""``save_run`` for a Hugging Face ``Trainer``: the run record of a trained model, for ``compare --runs``.

The example scripts of Transformers write only the argmax, which no
calibration metric can use. A sequence classifier's record holds its logits
from ``trainer.predict`` (which drops the duplicates that distributed
evaluation pads with). A causal language model's full logits cannot be kept
(50,000 tokens x a 128k vocabulary is 25 GB in float32), so its record holds
per-token statistics (:func:`labelsmooth.metrics.token_statistics`),
computed one batch at a time.

With a :class:`KeepBest` callback in the trainer, a classifier's record also
holds the predictions of the evaluation where the watched metric was best (the
early-stopped logits), so that ``compare --runs`` pairs smoothing against early
stopping.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from labelsmooth import _validation as v
from labelsmooth.experiments._records import save_run as save_record
from labelsmooth.experiments._tokens import TokenSplit, from_statistics
from labelsmooth.experiments.train import Checkpoint
from labelsmooth.metrics import token_statistics

__all__ = ["KeepBest", "is_causal_lm", "save_run"]

IGNORE_INDEX = v.IGNORE_INDEX


class KeepBest(TrainerCallback):
    """Keep, on the CPU, the weights of the evaluation where ``metric`` was best, for :func:`save_run`.

    The rule of ``labelsmooth compare``'s own early stopping: a strict
    improvement, ties keep the earlier evaluation, non-finite values never
    count. The record's ``best_epoch`` is the epoch in progress at that
    evaluation (``ceil(state.epoch)``, from 1). Costs one copy of the weights
    in CPU memory; the trainer's own checkpoints are not touched.

    Args:
        metric: a key of the evaluation's metrics (``"eval_loss"``, or
            ``"eval_" + name`` of a ``compute_metrics`` value).
        greater_is_better: whether a higher ``metric`` is better.

    Example::

        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val, callbacks=[KeepBest()])
        trainer.train()
        save_run(trainer, "runs/a0.1_s0.npz", alpha=0.1, seed=0, test_dataset=test, val_dataset=val)
    """

    def __init__(self, metric: str = "eval_loss", *, greater_is_better: bool = False) -> None:
        if not isinstance(metric, str):
            raise v.fail("metric", "a metric name (str)", metric, error=TypeError)
        self.metric = metric
        self.sign = -1.0 if v.check_flag(greater_is_better, "greater_is_better") else 1.0
        self.best: Checkpoint | None = None
        self.step = -1

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if metrics is None or model is None:
            return
        if self.metric not in metrics:
            raise v.fail("metric", f"a key of the evaluation's metrics ({', '.join(sorted(metrics))})",
                         self.metric)
        epoch = max(1, math.ceil(state.epoch or 0))
        best = Checkpoint.better(self.best, model, epoch, self.sign * float(metrics[self.metric]))
        if best is not self.best:
            self.best, self.step = best, state.global_step


def is_causal_lm(model: torch.nn.Module) -> bool:
    """A model Transformers registers as a causal LM (the rule ``LabelSmoother`` shifts by)."""
    return type(model).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def _batch_tokens(logits: Tensor, labels: Tensor, mask: Tensor | None,
                  start: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """One batch's statistics, with each token's sequence id and position (of its label, left padding
    not counted): position ``t`` predicts label ``t + 1``, as the model shifts."""
    stats = token_statistics(logits[:, :-1], labels[:, 1:], ignore_index=IGNORE_INDEX)
    length = labels.shape[1] - 1
    row = (stats.index // length).numpy()
    position = (stats.index % length).numpy() + 1
    if mask is not None:  # left padding: count positions from the first real token
        position = position - mask.long().argmax(dim=1).cpu().numpy()[row]
    return stats, start + row, position


def _tokens(trainer: Trainer, model: torch.nn.Module, dataset: Any, split: str) -> TokenSplit:
    """Per-token statistics of ``dataset``, batch by batch: no ``(tokens, vocabulary)`` tensor beyond one."""
    if trainer.args.world_size != 1:
        raise v.fail("trainer", "one process for a causal LM's record (call save_run on one process)",
                     f"world_size {trainer.args.world_size}")
    training = model.training
    model.eval()
    parts, seen = [], 0
    try:
        with torch.no_grad():
            for batch in trainer.get_test_dataloader(dataset):
                labels = batch.pop("labels", None)
                if labels is None:
                    raise v.fail(split, "batches with labels (-100 where ignored)", sorted(batch))
                batch = {key: value.to(trainer.args.device) if isinstance(value, Tensor) else value
                         for key, value in batch.items()}
                logits = model(**batch).logits
                parts.append(_batch_tokens(logits, labels, batch.get("attention_mask"), seen))
                seen += labels.shape[0]
    finally:
        model.train(training)
    if seen != len(dataset):
        raise v.fail(split, f"every one of its {len(dataset)} sequences predicted (dataloader_drop_last?)",
                     seen)
    return from_statistics(parts)


def _predicted(trainer: Trainer, dataset: Any, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    output = trainer.predict(dataset)
    if output.label_ids is None:
        raise v.fail(split, "examples with labels", "predictions without label_ids")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    labels = output.label_ids[0] if isinstance(output.label_ids, tuple) else output.label_ids
    return np.asarray(logits), np.asarray(labels), np.arange(len(labels))


def save_run(trainer: Trainer, path: str | os.PathLike[str], *, alpha: float, seed: int, test_dataset: Any,
             val_dataset: Any = None, settings: dict[str, Any] | None = None) -> Path:
    """Write the run record of ``trainer``'s model on ``test_dataset`` (and ``val_dataset``).

    A causal LM (:func:`is_causal_lm`): per-token statistics of the tokens
    whose label is not -100, shifted as the model shifts (the logits at
    ``t`` score the label at ``t + 1``), each identified by its sequence's
    index in the dataset and its position; one process only. Any other
    model: ``trainer.predict``'s logits and label ids, the dataset index as
    the id. The datasets are the ones the trainer would evaluate (tokenized,
    with ``labels``), in their order.

    Args:
        trainer: a trained ``transformers.Trainer``.
        path: the ``.npz`` or ``.pt`` file to write (one per (alpha, seed) run).
        alpha, seed: the run's smoothing and seed.
        test_dataset, val_dataset: the splits (``val_dataset=None``: no temperature scaling).
        settings: the run's other settings (the runs of one comparison must agree on them).

    Returns:
        The path written, by :func:`labelsmooth.experiments.save_run`.
    """
    if not isinstance(trainer, Trainer):
        raise v.fail("trainer", "a transformers.Trainer", type(trainer).__name__, error=TypeError)
    model = trainer.model
    if model is None:
        raise v.fail("trainer", "a Trainer with a model", None)
    causal = is_causal_lm(model)
    keep = _keep_best(trainer, causal)
    datasets = {"test_dataset": test_dataset, "val_dataset": val_dataset}
    splits: dict[str, Any] = {}
    for name, dataset in datasets.items():
        if dataset is not None:
            splits[name] = (_tokens(trainer, model, dataset, name) if causal
                            else _predicted(trainer, dataset, name))
    stopped = _early_stopped(trainer, model, keep, datasets, splits)
    return save_record(path, alpha=alpha, seed=seed, test=splits["test_dataset"],
                       val=splits.get("val_dataset"), settings=settings,
                       ignore_index=None if causal else _ignore(splits), **stopped)


def _keep_best(trainer: Trainer, causal: bool) -> KeepBest | None:
    """The trainer's :class:`KeepBest`, checked before anything is predicted; ``None`` without one."""
    keep = next((c for c in trainer.callback_handler.callbacks if isinstance(c, KeepBest)), None)
    if keep is None:
        return None
    if causal:
        raise v.fail("trainer", "no KeepBest callback for a causal LM (a token record has no early-stopped "
                     "statistics)", "KeepBest")
    if keep.best is None:
        raise v.fail("trainer", f"an evaluation with a finite {keep.metric} (eval_strategy, eval_dataset) "
                     "before save_run", "none")
    return keep


def _early_stopped(trainer: Trainer, model: torch.nn.Module, keep: KeepBest | None,
                   datasets: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """``save_record``'s early-stopping arguments from ``keep``: the best evaluation's logits (the
    final ones when no step followed it); the final weights stay in the model."""
    if keep is None or keep.best is None:
        return {}
    names = ("test_dataset", "val_dataset")
    if keep.step == trainer.state.global_step:
        logits = [None if final.get(name) is None else final[name][0] for name in names]
    else:
        with keep.best.loaded_into(model):
            logits = [None if datasets[name] is None else _predicted(trainer, datasets[name], name)[0]
                      for name in names]
    return {"best_epoch": keep.best.epoch, "test_es_logits": logits[0], "val_es_logits": logits[1]}


def _ignore(splits: dict[str, Any]) -> int | None:
    """-100 when a classifier's labels hold it (token classification), else none."""
    return IGNORE_INDEX if any((split[1] == IGNORE_INDEX).any() for split in splits.values()) else None

"""One (alpha, seed) run: a pure function of its context, so it can run here, in another process or on Ray.

:func:`execute` trains, writes the run's predictions (of the final weights and
of the early-stopped ones, the epoch with the lowest validation NLL) into a
:class:`~._records.RunRecord` and measures that record with
:func:`~._analysis.measure`, the function :func:`~._compare_runs.compare_runs`
applies to records read from disk: the same record gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labelsmooth.experiments._analysis import measure, rows
from labelsmooth.experiments._records import RecordSplit, RunRecord
from labelsmooth.experiments._results import RunError, RunResult
from labelsmooth.experiments.data import DataSet
from labelsmooth.experiments.evaluate import Predictions, penultimate_weights, predict, projection
from labelsmooth.experiments.train import Checkpoint, ModelFactory, TrainConfig, deterministic, train

__all__ = ["RunContext", "execute"]


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides its (alpha, seed); sent once to every worker."""

    data: DataSet
    model: ModelFactory
    config: TrainConfig
    #: The layer whose input is the penultimate layer (``None``: no picture).
    layer: str | None = None
    #: What the run's record says of its settings (``compare``'s settings: all but alpha and seed).
    settings: dict[str, Any] = field(default_factory=dict)


def _split(logits: np.ndarray, labels: np.ndarray, es_logits: np.ndarray | None) -> RecordSplit:
    return RecordSplit(logits, labels, np.arange(labels.shape[0], dtype=np.int64), es_logits)


Logits = tuple[np.ndarray | None, np.ndarray | None]


def _early_stopped(model: torch.nn.Module, best: Checkpoint | None, context: RunContext, last_epoch: int,
                   final: Logits) -> Logits:
    """The test and val logits of the weights of ``best`` (the final ones when it is the last epoch);
    ``(None, None)`` without a checkpoint (no validation split). Loads them into ``model``."""
    if best is None:
        return None, None
    if best.epoch == last_epoch:
        return final
    model.load_state_dict(best.state)
    device, data = torch.device(context.config.device), context.data
    test = predict(model, data.test, device, None)[0]
    return test, None if data.val is None else predict(model, data.val, device, None)[0]


def execute(context: RunContext, alpha: float, seed: int,
            on_step: Callable[[], None] | None = None) -> RunResult:
    """Train ``context.model`` with smoothing ``alpha`` under ``seed``; record and measure its predictions.

    Deterministic kernels and ``context.config.threads`` threads, so the same
    inputs give the same bits in any process. The result's ``run_record`` holds
    the run's :class:`~._records.RunRecord`. An exception inside the run comes
    out as a :class:`~._results.RunError` naming the run (its cause: the exception).
    """
    try:
        return _execute(context, alpha, seed, on_step)
    except Exception as error:  # any failure of the user's model or data: say which run, keep the cause
        raise RunError(alpha, seed, f"{type(error).__name__}: {error}") from error


def _execute(context: RunContext, alpha: float, seed: int, on_step: Callable[[], None] | None) -> RunResult:
    started = time.perf_counter()
    config, data = context.config, context.data
    device = torch.device(config.device)
    with deterministic(threads=config.threads, device=config.device):
        model, history, best = train(data, context.model, alpha, seed, config, on_step=on_step)
        logits, labels, features = predict(model, data.test, device, context.layer)
        val = None if data.val is None else predict(model, data.val, device, None)[:2]
        # The picture is of the final weights: copied before the early-stopped ones are loaded.
        weights = None if context.layer is None else penultimate_weights(model, context.layer).clone()
        test_es, val_es = _early_stopped(model, best, context, len(history),
                                         (logits, None if val is None else val[0]))
        val_split = None if val is None else _split(*val, val_es)
        record = RunRecord(alpha, seed, _split(logits, labels, test_es), val_split, config.convention,
                           data.ignore_index, data.class_names, context.settings, history,
                           best_epoch=None if best is None else best.epoch)
        result = measure(record)
        if features is not None and weights is not None:
            picture = _picture(record, features, weights, data.task)
            if picture is not None:
                result.projection, result.projection_labels, result.projection_classes = picture
    result.seconds = time.perf_counter() - started
    result.run_record = record
    return result


def _picture(record: RunRecord, features: torch.Tensor, weights: torch.Tensor,
             task: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
    """The template-plane projection of the test rows that are not ignored."""
    logits, labels, _ = rows(record.test, record.ignore_index)
    if record.ignore_index is not None:
        features = features[torch.from_numpy(record.test.labels.reshape(-1) != record.ignore_index)]
    return projection(Predictions(logits, labels, record.num_classes), features, weights, task)

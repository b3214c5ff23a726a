"""One (alpha, seed) run: a pure function of its context, so it can run here, in another process or on Ray.

:func:`execute` trains and evaluates; :class:`RunResult` is what it returns,
and :meth:`RunResult.to_json` / :meth:`RunResult.from_json` carry it through
``runs.jsonl`` without losing a bit (floats are written with ``repr``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labelsmooth.experiments.data import DataSet
from labelsmooth.experiments.evaluate import (
    Predictions,
    fit_scaling,
    learned_check,
    penultimate_weights,
    predict,
    projection,
    scores,
)
from labelsmooth.experiments.train import ModelFactory, TrainConfig, deterministic, train
from labelsmooth.metrics import ReliabilityBins

__all__ = ["RunContext", "RunResult", "execute"]

BIN_FIELDS = ("edges", "confidence", "accuracy", "count")


@dataclass(frozen=True)
class RunContext:
    """Everything a run needs besides its (alpha, seed); sent once to every worker."""

    data: DataSet
    model: ModelFactory
    config: TrainConfig
    #: The layer whose input is the penultimate layer (``None``: no picture).
    layer: str | None = None


@dataclass
class RunResult:
    """What one (alpha, seed) run measured on the test split, and how its training went.

    ``metrics`` are at temperature 1; ``scaled`` the same metrics after
    temperature scaling with ``temperature``, fitted on the validation split
    (both empty/``None`` without one).
    """

    alpha: float
    seed: int
    metrics: dict[str, float]
    bins: ReliabilityBins
    #: One entry per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``.
    history: list[dict[str, Any]] = field(default_factory=list)
    #: :func:`~labelsmooth.experiments.evaluate.learned_check`'s verdict.
    check: dict[str, Any] = field(default_factory=lambda: {"learned": True, "reasons": []})
    #: Penultimate activations of three test classes in their template plane (``None``: no picture).
    projection: np.ndarray | None = field(default=None, repr=False)
    projection_labels: np.ndarray | None = field(default=None, repr=False)
    projection_classes: tuple[int, int, int] | None = None
    #: Wall time of the run (kept in ``runs.jsonl``, left out of ``metrics.json``).
    seconds: float = 0.0
    scaled: dict[str, float] = field(default_factory=dict)
    temperature: float | None = None
    #: The fitted temperature is an end of the search interval (the NLL was still falling there).
    temperature_at_bound: bool = False

    @property
    def learned(self) -> bool:
        return bool(self.check["learned"])

    def value(self, key: str) -> float | None:
        """``"nll"`` (at T = 1), ``"nll_ts"`` (after scaling), ``"temperature"``; ``None`` if not measured."""
        if key == "temperature":
            return self.temperature
        if key.endswith("_ts"):
            return self.scaled.get(key[:-3])
        return self.metrics.get(key)

    def record(self) -> dict[str, Any]:
        """The run's entry in ``metrics.json``."""
        return {"alpha": self.alpha, "seed": self.seed, **self.metrics,
                **{f"{name}_ts": value for name, value in self.scaled.items()},
                "temperature": self.temperature, "temperature_at_bound": self.temperature_at_bound,
                "learned": self.learned,
                "learned_check": {k: v for k, v in self.check.items() if k != "learned"},
                "history": self.history}

    def cluster_tightness(self) -> float | None:
        """Mean distance of the projected points to their class centroid over the mean distance
        between centroids: smaller means tighter, better separated clusters (``None``: no projection).
        """
        if self.projection is None or self.projection_labels is None or self.projection_classes is None:
            return None
        centroids, spreads = [], []
        for k in self.projection_classes:
            points = self.projection[self.projection_labels == k]
            if len(points) == 0:
                return None
            centroid = points.mean(0)
            centroids.append(centroid)
            spreads.append(float(np.linalg.norm(points - centroid, axis=1).mean()))
        pairs = [(0, 1), (0, 2), (1, 2)]
        separation = float(np.mean([np.linalg.norm(centroids[i] - centroids[j]) for i, j in pairs]))
        return float(np.mean(spreads)) / separation if separation > 0 else None

    def to_json(self) -> dict[str, Any]:
        """Everything, as JSON values (a line of ``runs.jsonl``)."""
        return {
            "alpha": self.alpha, "seed": self.seed, "metrics": self.metrics, "history": self.history,
            "check": self.check, "seconds": self.seconds, "scaled": self.scaled,
            "temperature": self.temperature, "temperature_at_bound": self.temperature_at_bound,
            "bins": {name: getattr(self.bins, name).tolist() for name in BIN_FIELDS}
            | {"total": self.bins.total},
            "projection": None if self.projection is None else self.projection.tolist(),
            "projection_labels": None if self.projection_labels is None else self.projection_labels.tolist(),
            "projection_classes": None if self.projection_classes is None else list(self.projection_classes),
        }

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> RunResult:
        bins = line["bins"]
        tensors = {name: torch.tensor(bins[name], dtype=torch.float64) for name in BIN_FIELDS}
        classes = line["projection_classes"]
        return cls(
            line["alpha"], line["seed"], line["metrics"], ReliabilityBins(**tensors, total=bins["total"]),
            line["history"], line["check"],
            None if line["projection"] is None else np.array(line["projection"], dtype=np.float64),
            None if line["projection_labels"] is None
            else np.array(line["projection_labels"], dtype=np.int64),
            None if classes is None else (classes[0], classes[1], classes[2]), line["seconds"],
            line["scaled"], line["temperature"], line["temperature_at_bound"],
        )


def execute(context: RunContext, alpha: float, seed: int,
            on_step: Callable[[], None] | None = None) -> RunResult:
    """Train ``context.model`` with smoothing ``alpha`` under ``seed``, then measure it on the test split.

    Deterministic kernels and ``context.config.threads`` threads, so the same
    inputs give the same bits in any process.
    """
    started = time.perf_counter()
    config, data = context.config, context.data
    device = torch.device(config.device)
    with deterministic(threads=config.threads, device=config.device):
        model, history = train(data, context.model, alpha, seed, config, on_step=on_step)
        predictions, features = predict(model, data, device, context.layer)
        metrics, bins = scores(predictions, data.task)
        val = predict(model, data, device, None, split="val")[0] if data.val is not None else None
        temperature, at_bound, scaled = _temperature_scaled(predictions, val, data.task)
        check = learned_check(predictions, history)
        picture = None
        if features is not None and context.layer is not None:
            picture = projection(predictions, features, penultimate_weights(model, context.layer), data.task)
    result = RunResult(alpha, seed, metrics, bins, history, check, seconds=time.perf_counter() - started,
                       scaled=scaled, temperature=temperature, temperature_at_bound=at_bound)
    if picture is not None:
        result.projection, result.projection_labels, result.projection_classes = picture
    return result


def _temperature_scaled(test: Predictions, val: Predictions | None,
                        task: str) -> tuple[float | None, bool, dict[str, float]]:
    """The temperature fitted on ``val``, whether it is a search bound, and the test metrics after scaling."""
    if val is None:
        return None, False, {}
    temperature, at_bound = fit_scaling(val)
    if temperature is None:
        return None, False, {}
    return temperature, at_bound, scores(test.scaled(temperature), task)[0]

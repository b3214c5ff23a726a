"""What a comparison produces: :class:`RunResult` (one run's measurements) and :class:`CompareResult`.

Plain data with ``to_dict``/``to_json``; nothing here needs the report, the
training loop or the analysis, so every module can import it (this is what
keeps the imports of ``experiments`` pointing one way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelsmooth.experiments.evaluate import METRICS, metric_names
from labelsmooth.metrics import ECE_BINS, TEMPERATURE_BOUNDS, ReliabilityBins

if TYPE_CHECKING:
    from labelsmooth.experiments.train import TrainConfig

__all__ = ["BIN_FIELDS", "CompareResult", "EarlyStopped", "RunError", "RunResult"]

BIN_FIELDS = ("edges", "confidence", "accuracy", "count")


class RunError(RuntimeError):
    """A run that crashed: which (alpha, seed), and the exception (also its ``__cause__``, where it
    survived the trip from a worker process)."""

    def __init__(self, alpha: float, seed: int, error: str) -> None:
        super().__init__(alpha, seed, error)
        self.alpha, self.seed, self.error = alpha, seed, error

    def __str__(self) -> str:
        return f"run alpha={self.alpha:g} seed={self.seed} failed: {self.error}"


@dataclass
class EarlyStopped:
    """A run measured again with the weights of its epoch of lowest validation NLL (early stopping).

    ``metrics`` at T = 1, ``scaled`` after temperature scaling with
    ``temperature``, fitted on the validation split with these weights;
    ``temperature_ok`` and ``temperature_note`` as :class:`RunResult`'s.
    """

    #: The epoch (from 1) whose weights these are; ``None`` when the record does not say.
    epoch: int | None
    metrics: dict[str, float]
    scaled: dict[str, float] = field(default_factory=dict)
    temperature: float | None = None
    temperature_ok: bool | None = None
    temperature_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics, "scaled": self.scaled,
                "temperature": self.temperature, "temperature_ok": self.temperature_ok,
                "temperature_note": self.temperature_note}

    @classmethod
    def from_json(cls, line: dict[str, Any] | None) -> EarlyStopped | None:
        return None if line is None else cls(**line)


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
    #: Whether the fitted temperature can be trusted: ``False`` when it sits at a search bound or the
    #: validation split cannot pin it down (``temperature_note`` says why); ``None`` without a fit.
    #: Such runs are left out of every ``_ts`` mean, interval and verdict.
    temperature_ok: bool | None = None
    temperature_note: str | None = None
    #: The reliability bins after temperature scaling (``None`` without a fit).
    scaled_bins: ReliabilityBins | None = None
    #: Per-test-example sums for the bootstrap over examples (:class:`~._analysis.ExampleStats`);
    #: kept in memory only, never written.
    examples: Any = field(default=None, repr=False, compare=False)
    #: The run's :class:`~._records.RunRecord` on its way from a worker to the writer; memory only.
    run_record: Any = field(default=None, repr=False, compare=False)
    #: The same measurements with the early-stopped weights (``None``: no validation split, or a record
    #: without early-stopped predictions).
    early_stopped: EarlyStopped | None = None

    @property
    def learned(self) -> bool:
        return bool(self.check["learned"])

    def value(self, key: str) -> float | None:
        """``"nll"`` (at T = 1), ``"nll_ts"`` (after scaling), ``"temperature"``; the same of the
        early-stopped weights with ``_es`` before the suffix (``"nll_es"``, ``"nll_es_ts"``,
        ``"temperature_es"``), and ``"best_epoch"``.

        ``None`` if not measured, and for the scaled values and the temperature
        of a run whose temperature fit failed (``temperature_ok`` false).
        """
        es = self.early_stopped
        if key == "best_epoch":
            return None if es is None or es.epoch is None else float(es.epoch)
        if key.endswith(("_es", "_es_ts")):
            if es is None:
                return None
            plain = key.removesuffix("_es") if key.endswith("_es") else key.removesuffix("_es_ts") + "_ts"
            return _value(plain, es.metrics, es.scaled, es.temperature, es.temperature_ok)
        return _value(key, self.metrics, self.scaled, self.temperature, self.temperature_ok)

    def record(self) -> dict[str, Any]:
        """The run's entry in ``metrics.json``."""
        return {"alpha": self.alpha, "seed": self.seed, **self.metrics,
                **{f"{name}_ts": value for name, value in self.scaled.items()},
                "temperature": self.temperature, "temperature_ok": self.temperature_ok,
                "temperature_note": self.temperature_note, **_early_stopped_record(self.early_stopped),
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
            "temperature": self.temperature, "temperature_ok": self.temperature_ok,
            "temperature_note": self.temperature_note,
            "bins": _bins_json(self.bins),
            "scaled_bins": None if self.scaled_bins is None else _bins_json(self.scaled_bins),
            "projection": None if self.projection is None else self.projection.tolist(),
            "projection_labels": None if self.projection_labels is None else self.projection_labels.tolist(),
            "projection_classes": None if self.projection_classes is None else list(self.projection_classes),
            "early_stopped": None if self.early_stopped is None else self.early_stopped.to_json(),
        }

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> RunResult:
        classes = line["projection_classes"]
        scaled_bins = line.get("scaled_bins")  # a store written before they were kept has none
        return cls(
            line["alpha"], line["seed"], line["metrics"], _bins_from_json(line["bins"]),
            line["history"], line["check"],
            None if line["projection"] is None else np.array(line["projection"], dtype=np.float64),
            None if line["projection_labels"] is None
            else np.array(line["projection_labels"], dtype=np.int64),
            None if classes is None else (classes[0], classes[1], classes[2]), line["seconds"],
            line["scaled"], line["temperature"], line["temperature_ok"], line["temperature_note"],
            None if scaled_bins is None else _bins_from_json(scaled_bins),
            # A store written before early stopping was measured has none.
            early_stopped=EarlyStopped.from_json(line.get("early_stopped")),
        )


def _value(key: str, metrics: dict[str, float], scaled: dict[str, float], temperature: float | None,
           ok: bool | None) -> float | None:
    """:meth:`RunResult.value` of one checkpoint's measurements."""
    if key == "temperature":
        return temperature if ok else None
    if key.endswith("_ts"):
        return scaled.get(key[:-3]) if ok else None
    return metrics.get(key)


def _early_stopped_record(es: EarlyStopped | None) -> dict[str, Any]:
    """A run's early-stopped values in ``metrics.json``: ``best_epoch``, ``{metric}_es``, ``{metric}_es_ts``,
    ``temperature_es``, ``temperature_es_ok``, ``temperature_es_note`` (all ``None``: no early stopping)."""
    if es is None:
        return {"best_epoch": None}
    return {"best_epoch": es.epoch, **{f"{name}_es": value for name, value in es.metrics.items()},
            **{f"{name}_es_ts": value for name, value in es.scaled.items()},
            "temperature_es": es.temperature, "temperature_es_ok": es.temperature_ok,
            "temperature_es_note": es.temperature_note}


def _bins_json(bins: ReliabilityBins) -> dict[str, Any]:
    return {name: getattr(bins, name).tolist() for name in BIN_FIELDS} | {"total": bins.total}


def _bins_from_json(bins: dict[str, Any]) -> ReliabilityBins:
    tensors = {name: torch.tensor(bins[name], dtype=torch.float64) for name in BIN_FIELDS}
    return ReliabilityBins(**tensors, total=bins["total"])


@dataclass
class CompareResult:
    """Every run, the per-alpha summary and the paired comparisons against the first alpha."""

    dataset: str
    task: str
    num_classes: int
    class_names: tuple[str, ...]
    alphas: list[float]
    seeds: list[int]
    #: The training settings (``None`` for a comparison of saved records).
    config: TrainConfig | None
    runs: list[RunResult] = field(repr=False)
    summary: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict, repr=False)
    #: What loading changed (dropped columns) and why the penultimate picture is missing, if it is.
    notes: tuple[str, ...] = ()
    #: Interrupted before every run finished.
    partial: bool = False
    #: Versions, the call, the device, the start and wall time, the git commit (:mod:`.provenance`);
    #: the report prints it, ``metrics.json`` leaves it out.
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)
    #: ``"shared"``: every penultimate-layer panel on one scale; ``"own"``: each on its own.
    penultimate_scale: str = "shared"
    #: Whether intervals were computed (``ci=False``: none, and so no noise verdicts).
    ci: bool = True
    #: The record files a comparison of saved runs read: ``{"path", "sha256", "alpha", "seed"}`` each.
    records: list[dict[str, Any]] = field(default_factory=list)
    #: What the user should know before trusting the numbers (:mod:`._warnings`): test classes absent from
    #: training, a model that looks undertrained, outputs that are already probabilities.
    warnings: tuple[str, ...] = ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        return metric_names(self.task)

    @property
    def not_learned(self) -> list[RunResult]:
        return [r for r in self.runs if not r.learned]

    def reliability(self, alpha: float, *, scaled: bool = False) -> dict[str, Any] | None:
        """The reliability bins of ``alpha``'s test predictions pooled over its finished seeds, and their ECE.

        ``scaled``: after temperature scaling, over the runs whose fit can be
        trusted (``temperature_ok``).

        Per bin: the ``count`` of predictions, their mean ``confidence`` and
        ``accuracy`` (0 for an empty bin); ``total`` counts every prediction
        (a confidence of exactly 0 falls in no bin of Guo et al.'s binning).
        ``ece`` is the ECE of the pooled predictions, which is what the diagram
        draws; ``None`` when no run of ``alpha`` has finite outputs.
        """
        found = [r.bins if not scaled else r.scaled_bins if r.temperature_ok else None
                 for r in self.runs_of(alpha)]
        runs = [bins for bins in found if bins is not None and bins.total > 0]
        if not runs:
            return None
        count = torch.stack([r.count for r in runs]).sum(0)
        # Per-bin sums of correctness and confidence pool exactly; the means are taken afterwards.
        hits = torch.stack([r.accuracy * r.count for r in runs]).sum(0) / count.clamp(min=1)
        confidence = torch.stack([r.confidence * r.count for r in runs]).sum(0) / count.clamp(min=1)
        total = sum(r.total for r in runs)
        ece = float(((hits - confidence).abs() * count).sum()) / total
        return {"alpha": alpha, "n_seeds": len(runs), "edges": runs[0].edges.tolist(),
                "count": [int(c) for c in count.tolist()], "accuracy": hits.tolist(),
                "confidence": confidence.tolist(), "total": total, "ece": ece}

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` document."""
        return {
            "dataset": self.dataset, "task": self.task, "num_classes": self.num_classes,
            "alphas": self.alphas, "seeds": self.seeds, "partial": self.partial, "notes": list(self.notes),
            "warnings": list(self.warnings),
            "config": {
                **self.settings,
                "loss": "dice+cross_entropy" if self.task == "segmentation" else "cross_entropy",
                "ece_bins": ECE_BINS, "ece_binning": "guo", "ci_level": 0.95,
                "temperature_scaling": "one T per run, the NLL minimizer on the validation split",
                "temperature_bounds": list(TEMPERATURE_BOUNDS),
            },
            "runs": [run.record() for run in self.runs],
            "summary": self.summary,
            "reliability": [bins for bins in map(self.reliability, self.alphas) if bins is not None],
            "reliability_ts": [bins for alpha in self.alphas
                               if (bins := self.reliability(alpha, scaled=True)) is not None],
            "penultimate": [
                {"alpha": r.alpha, "seed": r.seed, "classes": r.projection_classes,
                 "spread_to_separation": r.cluster_tightness()}
                for r in self.penultimate_runs()
            ],
            "comparisons": self.comparisons,
            **({"records": self.records} if self.records else {}),
            # Token-level records: every metric is per token, and those needing full probabilities are absent.
            **({"unit": "tokens", "absent_metrics": [name for name in METRICS if name not in self.metric_names
                                                     and not METRICS[name].segmentation_only]}
               if self.task == "tokens" else {}),
        }

    def penultimate_runs(self) -> list[RunResult]:
        """The lowest finished seed of every alpha: the runs the penultimate-layer picture shows."""
        return [runs[0] for runs in map(self.runs_of, self.alphas) if runs]

    def runs_of(self, alpha: float) -> list[RunResult]:
        """The finished runs of ``alpha``, by seed."""
        return sorted((r for r in self.runs if r.alpha == alpha), key=lambda r: r.seed)

    def seeds_of(self, alpha: float) -> list[int]:
        return [r.seed for r in self.runs_of(alpha)]

    def shared_seeds(self) -> list[int]:
        """The seeds that every alpha with a finished run has finished: what a partial comparison ranks on."""
        finished = [set(self.seeds_of(alpha)) for alpha in self.alphas if self.runs_of(alpha)]
        return sorted(set.intersection(*finished)) if finished else []

"""What a trained model is measured by on the test split, and whether it learned at all.

The metrics live in one registry, :data:`METRICS`: the summary, the
comparisons, ``metrics.json`` and the report all read their names, labels and
directions from it, so a new metric is one entry here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from labelsmooth.experiments._geometry import template_plane_projection as project
from labelsmooth.experiments.data import in_order
from labelsmooth.experiments.models import class_weights
from labelsmooth.experiments.stats import above_rate
from labelsmooth.experiments.train import EVAL_BATCH
from labelsmooth.metrics import (
    ECE_BINS,
    TEMPERATURE_BOUNDS,
    ReliabilityBins,
    adaptive_ece,
    aurc,
    brier_score,
    classwise_ece,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    smooth_ece,
)

__all__ = [
    "LEARNED_LEVEL", "METRICS", "Metric", "Predictions", "fit_scaling", "learned_check", "learned_verdict",
    "metric_names", "penultimate_weights", "predict", "projection", "scores", "value_range",
]

#: Penultimate-layer points kept per class for the template-plane picture.
PROJECTION_POINTS = 300
#: A run learned when its test accuracy beats the majority-class rate at this level (one-sided binomial test).
LEARNED_LEVEL = 0.01


@dataclass(frozen=True)
class Predictions:
    """Test-split logits ``(M, C)`` in float64 and class indices ``(M,)``: one row per item or pixel."""

    logits: Tensor
    targets: Tensor
    num_classes: int

    @cached_property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=1)

    @cached_property
    def prediction(self) -> Tensor:
        return self.probs.argmax(1)

    def scaled(self, temperature: float) -> Predictions:
        """The same predictions with the logits divided by ``temperature`` (temperature scaling)."""
        return Predictions(self.logits / temperature, self.targets, self.num_classes)


def _mean_iou(p: Predictions) -> float:
    ious = []
    for k in range(p.num_classes):
        union = ((p.prediction == k) | (p.targets == k)).sum().item()
        if union:
            ious.append(((p.prediction == k) & (p.targets == k)).sum().item() / union)
    return float(np.mean(ious))


@dataclass(frozen=True)
class Metric:
    """One number per run: how it is computed, shown and compared."""

    label: str
    higher_is_better: bool
    compute: Callable[[Predictions], float]
    #: Shown in percent (a rate) rather than as a plain number.
    percent: bool = False
    segmentation_only: bool = False
    #: A function of the argmax only: temperature scaling (T > 0) cannot change it.
    scale_invariant: bool = False
    #: Needs every class's probability, which token-level records do not keep.
    full_distribution: bool = False
    #: The largest value the metric can take (its smallest is 0): intervals are drawn and printed inside.
    upper: float = 1.0


# For segmentation every metric is computed per pixel (ignored pixels left out): each pixel's
# class distribution is one prediction, as the ECE has always been here.
METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", True, lambda p: float((p.prediction == p.targets).double().mean().item()),
                       percent=True, scale_invariant=True),
    "nll": Metric("NLL", False, lambda p: float(F.cross_entropy(p.logits, p.targets).item()), upper=math.inf),
    "ece": Metric("ECE", False, lambda p: expected_calibration_error(p.probs, p.targets, n_bins=ECE_BINS)),
    "smooth_ece": Metric("smooth ECE", False, lambda p: smooth_ece(p.probs, p.targets)),
    "adaptive_ece": Metric("adaptive ECE", False,
                           lambda p: adaptive_ece(p.probs, p.targets, n_bins=ECE_BINS)),
    "classwise_ece": Metric("classwise ECE", False,
                            lambda p: classwise_ece(p.probs, p.targets, n_bins=ECE_BINS),
                            full_distribution=True),
    "brier": Metric("Brier", False, lambda p: brier_score(p.probs, p.targets), upper=2.0),
    "aurc": Metric("AURC", False, lambda p: aurc(p.probs, p.targets)),
    "miou": Metric("mean IoU", True, _mean_iou, percent=True, segmentation_only=True, scale_invariant=True),
}


def value_range(key: str) -> tuple[float, float]:
    """The values summary key ``key`` can take: ``[0, upper]`` of its metric (raw or ``_ts``), ``[0, inf)``
    for the temperature."""
    metric = METRICS.get(key.removesuffix("_ts"))
    return (0.0, math.inf) if metric is None else (0.0, metric.upper)


def clipped(mean: float, half: float, key: str) -> tuple[float, float]:
    """``mean - half`` and ``mean + half``, kept inside :func:`value_range` (a t interval of a bounded
    metric can reach past its bounds: accuracy 25% ± 106%)."""
    low, high = value_range(key)
    return max(mean - half, low), min(mean + half, high)


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics of a ``"classification"``, ``"segmentation"`` or ``"tokens"`` (token-level records)
    comparison, in report order."""
    if task == "tokens":
        return tuple(name for name, m in METRICS.items() if not (m.segmentation_only or m.full_distribution))
    return tuple(name for name, m in METRICS.items() if task == "segmentation" or not m.segmentation_only)


def _rows(tensor: Tensor) -> Tensor:
    """``(B, C)`` as is; ``(B, C, H, W)`` as ``(B * H * W, C)``, class dimension last."""
    return tensor.permute(0, 2, 3, 1).flatten(0, 2) if tensor.dim() == 4 else tensor


def predict(model: nn.Module, source: Dataset[Any], device: torch.device,
            layer: str | None) -> tuple[np.ndarray, np.ndarray, Tensor | None]:
    """``model``'s float32 logits ``(N, C, ...)`` on ``source`` in order, its labels ``(N, ...)``, and the
    input of ``layer`` per row (one row per item or pixel, ignored ones included), if named."""
    captured: list[Tensor] = []
    hook = None
    if layer is not None:
        module = dict(model.named_modules())[layer]
        hook = module.register_forward_pre_hook(
            lambda _, args: captured.append(_rows(args[0].detach()).cpu()))
    model.eval()
    logits, targets = [], []
    try:
        with torch.no_grad():
            for inputs, batch_targets in in_order(source, EVAL_BATCH):
                logits.append(model(inputs.to(device)).detach().float().cpu())
                targets.append(batch_targets)
    finally:
        if hook is not None:
            hook.remove()
    features = torch.cat(captured) if captured else None
    return torch.cat(logits).numpy(), torch.cat(targets).long().numpy(), features


def learned_check(p: Predictions, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether a run learned, and why not.

    It did not when its test accuracy is not above the majority-class rate of
    the test split (one-sided binomial test at :data:`LEARNED_LEVEL`), or when
    its training loss became non-finite or ended above its first epoch's.
    """
    counts = torch.bincount(p.targets, minlength=p.num_classes)
    majority = float(counts.max().item()) / max(p.targets.numel(), 1)
    finite = bool(torch.isfinite(p.logits).all())
    correct = int((p.prediction == p.targets).sum().item()) if finite else 0
    return learned_verdict(correct, int(p.targets.numel()), majority, history, finite=finite)


def learned_verdict(correct: int, total: int, majority: float, history: list[dict[str, Any]], *,
                    finite: bool = True) -> dict[str, Any]:
    """:func:`learned_check` from ``correct`` right predictions of ``total`` and the majority-class rate."""
    p_value = above_rate(correct, total, majority)
    reasons = []
    # The training loss first: a diverged run also scores 0 on the test split, and that is the consequence.
    losses = [entry["train_loss"] for entry in history]
    if not all(math.isfinite(loss) for loss in losses):
        reasons.append("the training loss became non-finite")
    elif losses and losses[-1] > losses[0]:
        reasons.append(f"the training loss ended above its first epoch's "
                       f"({losses[-1]:.4g} > {losses[0]:.4g})")
    if not p_value < LEARNED_LEVEL:
        accuracy = correct / max(total, 1)
        outputs = "" if finite else " (its outputs are not finite)"
        reasons.append(f"test accuracy {accuracy:.3f}{outputs} is not above the majority-class "
                       f"rate {majority:.3f} (one-sided binomial test, p = {p_value:.2g})")
    return {"learned": not reasons, "majority_rate": majority, "p_value": p_value, "reasons": reasons}


def _empty_bins() -> ReliabilityBins:
    zeros = torch.zeros(ECE_BINS, dtype=torch.float64)
    return ReliabilityBins(torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64), zeros, zeros, zeros, 0)


def scores(p: Predictions, task: str) -> tuple[dict[str, float], ReliabilityBins]:
    """Every metric of ``task`` and the reliability bins (NaN metrics, empty bins for non-finite logits)."""
    if not bool(torch.isfinite(p.logits).all()):
        return {name: math.nan for name in metric_names(task)}, _empty_bins()
    metrics = {name: METRICS[name].compute(p) for name in metric_names(task)}
    return metrics, reliability_bins(p.probs, p.targets, n_bins=ECE_BINS)


def fit_scaling(val: Predictions) -> tuple[float | None, bool]:
    """The temperature that minimizes the validation NLL (Guo et al.), and whether it is a search bound.

    ``None`` when the validation logits are not finite or there are none. A
    fit at a bound of :data:`TEMPERATURE_BOUNDS` (a validation split the model
    separates perfectly drives ``T`` to 0) is returned and flagged, not warned
    about: the report says so.
    """
    if val.targets.numel() == 0 or not bool(torch.isfinite(val.logits).all()):
        return None, False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fit_temperature", category=RuntimeWarning)
        temperature = fit_temperature(val.logits, val.targets, bounds=TEMPERATURE_BOUNDS)
    return temperature, temperature in TEMPERATURE_BOUNDS


def _spread(rows: Tensor) -> Tensor:
    """At most :data:`PROJECTION_POINTS` of ``rows``, evenly spaced (pixels from every image)."""
    if rows.numel() <= PROJECTION_POINTS:
        return rows
    return rows[torch.linspace(0, rows.numel() - 1, PROJECTION_POINTS).long()]


def projection(p: Predictions, features: Tensor, weights: Tensor,
               task: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
    """Penultimate activations of three classes in their template plane (``None`` with fewer than three)."""
    first = 1 if task == "segmentation" else 0  # skip the background class
    if p.num_classes - first < 3 or not bool(torch.isfinite(features).all()):
        return None
    classes = (first, first + 1, first + 2)
    rows = torch.cat([_spread(torch.nonzero(p.targets == k).flatten()) for k in classes])
    coords = project(features[rows].double(), weights.cpu().double(), classes)
    return coords.numpy(), p.targets[rows].numpy(), classes


def penultimate_weights(model: nn.Module, layer: str) -> Tensor:
    return class_weights(dict(model.named_modules())[layer])

"""One training run on the library's Event/State/Engine protocol, and its evaluation."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth.algorithms import Algorithm, CutMix, Engine, Event, LabelSmoothing, MixUp, State
from labelsmooth.experiments.data import DataSet, flip_labels
from labelsmooth.experiments.models import Classifier, build_model
from labelsmooth.functional import soft_cross_entropy
from labelsmooth.losses import DiceCELoss
from labelsmooth.metrics import ReliabilityBins, expected_calibration_error, reliability_bins
from labelsmooth.metrics import template_plane_projection as project

#: Penultimate-layer points kept per class for the template-plane picture.
PROJECTION_POINTS = 300


@dataclass(frozen=True)
class TrainConfig:
    """How each run trains; :func:`compare` picks defaults per data set."""

    epochs: int
    batch_size: int
    lr: float
    convention: str = "uniform"
    label_noise: float = 0.0
    device: str = "cpu"
    #: Beta concentrations of MixUp and CutMix (``None``: off); they compose with the smoothing.
    mixup: float | None = None
    cutmix: float | None = None


@dataclass
class RunResult:
    """What one (alpha, seed) run measured on the test split."""

    alpha: float
    seed: int
    metrics: dict[str, float]
    bins: ReliabilityBins
    #: Penultimate activations of three test classes in their template plane
    #: (``None`` with fewer than three classes).
    projection: np.ndarray | None = field(default=None, repr=False)
    projection_labels: np.ndarray | None = field(default=None, repr=False)
    projection_classes: tuple[int, int, int] | None = None

    def record(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "seed": self.seed, **self.metrics}

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


@contextmanager
def deterministic(threads: int = 1, device: str = "cpu") -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the body; restored afterwards.

    On CPU every op used here has a deterministic kernel. On CUDA cuBLAS needs
    ``CUBLAS_WORKSPACE_CONFIG`` (set here if unset) and an op without a
    deterministic kernel only warns, so the run goes on.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    if not on_cpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=not on_cpu)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(previous_threads)


def loss_function(data: DataSet) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss on the dense targets ``LabelSmoothing`` leaves (ignored pixels are all-zero rows).

    Cross-entropy for classification; Dice + cross-entropy for segmentation
    (``alpha=0`` here: the algorithm has smoothed the targets already; one Dice
    per class over the batch, as MONAI's ``batch=True``).
    """
    if data.task == "segmentation":
        dice_ce: Callable[[Tensor, Tensor], Tensor] = DiceCELoss(batch=True)
        return dice_ce
    return soft_cross_entropy


def train(data: DataSet, alpha: float, seed: int, config: TrainConfig,
          on_step: Callable[[], None] | None = None) -> Classifier:
    """Train a fresh model with ``LabelSmoothing(alpha)``; every random choice follows ``seed``."""
    torch.manual_seed(seed)
    device = torch.device(config.device)
    model = build_model(data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    targets = flip_labels(data.train.targets, config.label_noise, data.num_classes,
                          generator=generator, ignore_index=data.ignore_index)
    algorithms: list[Algorithm] = [
        LabelSmoothing(alpha, ignore_index=data.ignore_index, convention=config.convention)
    ]
    # Their own generators, so that switching them on leaves the data order of a seed alone.
    if config.mixup is not None:
        algorithms.append(MixUp(config.mixup, ignore_index=data.ignore_index, seed=10_000 + seed))
    if config.cutmix is not None:
        algorithms.append(CutMix(config.cutmix, ignore_index=data.ignore_index, seed=20_000 + seed))
    state = State(model=model, optimizers=[optimizer])
    engine = Engine(state, algorithms)
    loss_fn = loss_function(data)
    engine.run_event(Event.INIT)
    engine.run_event(Event.FIT_START)
    n = data.train.inputs.shape[0]
    for epoch in range(config.epochs):
        state.epoch = epoch
        model.train()
        engine.run_event(Event.EPOCH_START)
        order = torch.randperm(n, generator=generator)
        for batch_idx, start in enumerate(range(0, n, config.batch_size)):
            index = order[start : start + config.batch_size]
            state.batch_idx = batch_idx
            state.batch = (data.train.inputs[index].to(device), targets[index].to(device))
            engine.run_event(Event.BATCH_START)
            engine.run_event(Event.BEFORE_TRAIN_BATCH)
            engine.run_event(Event.BEFORE_FORWARD)
            state.outputs = model(state.batch[0])
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
            if on_step is not None:
                on_step()
        engine.run_event(Event.EPOCH_END)
    engine.run_event(Event.FIT_END)
    return model


def _predict(model: Classifier, inputs: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Logits and penultimate features, class dimension last, flattened over pixels."""
    model.eval()
    logits, features = [], []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], 256):
            h = model.features(inputs[start : start + 256].to(device))
            z = model.head(h)
            if z.dim() == 4:
                z, h = z.permute(0, 2, 3, 1).flatten(0, 2), h.permute(0, 2, 3, 1).flatten(0, 2)
            logits.append(z.cpu().double())
            features.append(h.cpu().double())
    return torch.cat(logits), torch.cat(features)


def _mean_iou(prediction: Tensor, targets: Tensor, num_classes: int) -> float:
    ious = []
    for k in range(num_classes):
        union = ((prediction == k) | (targets == k)).sum().item()
        if union:
            ious.append(((prediction == k) & (targets == k)).sum().item() / union)
    return float(np.mean(ious))


def _spread(rows: Tensor) -> Tensor:
    """At most :data:`PROJECTION_POINTS` of ``rows``, evenly spaced (pixels from every image)."""
    if rows.numel() <= PROJECTION_POINTS:
        return rows
    return rows[torch.linspace(0, rows.numel() - 1, PROJECTION_POINTS).long()]


def evaluate(model: Classifier, data: DataSet, alpha: float, seed: int, device: str = "cpu") -> RunResult:
    """Accuracy, NLL, ECE (15 bins, Guo's binning) and, for segmentation, mean IoU on the test split."""
    logits, features = _predict(model, data.test.inputs, torch.device(device))
    targets = data.test.targets.reshape(-1)
    if data.ignore_index is not None:
        keep = targets != data.ignore_index
        logits, features, targets = logits[keep], features[keep], targets[keep]
    probs = torch.softmax(logits, dim=1)
    prediction = probs.argmax(1)
    metrics = {
        "accuracy": float((prediction == targets).double().mean().item()),
        "nll": float(F.cross_entropy(logits, targets).item()),
        "ece": expected_calibration_error(probs, targets),
    }
    if data.task == "segmentation":
        metrics["miou"] = _mean_iou(prediction, targets, data.num_classes)
    result = RunResult(alpha, seed, metrics, reliability_bins(probs, targets))
    first = 1 if data.task == "segmentation" else 0  # skip the background class
    if data.num_classes - first >= 3:
        classes = (first, first + 1, first + 2)
        rows = torch.cat([_spread(torch.nonzero(targets == k).flatten()) for k in classes])
        coords = project(features[rows], model.class_weights().cpu().double(), classes)
        result.projection, result.projection_labels = coords.numpy(), targets[rows].numpy()
        result.projection_classes = classes
    return result

"""What a user needs to know before trusting a comparison, in one sentence each.

None of these stops the comparison (each can be what the user wants), but
each changes what its numbers mean: classes the model never saw in
training, a model still improving when training stopped, and a model whose
outputs are probabilities where the losses and metrics expect logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from labelsmooth.experiments._results import RunResult
from labelsmooth.experiments.data import DataSet, shorten

__all__ = ["absent_classes", "probabilities", "undertrained"]

#: How far from 1 a row of probabilities may sum (float32 softmax rounding).
SUM_TOLERANCE = 1e-3


def absent_classes(data: DataSet) -> str | None:
    """Test classes that no training label has: the model cannot predict them, whatever alpha."""
    train, test = data.labels.get("train"), data.labels.get("test")
    if train is None or test is None:
        return None
    seen = set(train.reshape(-1).tolist())
    missing = sorted(set(test.reshape(-1).tolist()) - seen - {data.ignore_index})
    if not missing:
        return None
    count = int(torch.isin(test, torch.tensor(missing)).sum())
    return (f"test classes {shorten(missing)} never occur in the training split ({count} of {test.numel()} "
            "test labels): no alpha can get them right")


def undertrained(runs: Sequence[RunResult]) -> str | None:
    """Every run's validation loss lowest at its last epoch: training stopped while the model still
    improved, so the comparison is of models that are not done (more ``epochs`` would say more)."""
    last = []
    for run in runs:
        losses = [(e["val_loss"], e["epoch"]) for e in run.history if e.get("val_loss") is not None]
        if len(losses) < 2:
            return None
        last.append(min(losses)[1] == losses[-1][1])
    if not last or not all(last):
        return None
    return (f"the validation loss of every run ({len(runs)}) was lowest at its last epoch: the model looks "
            "undertrained; more epochs may change the comparison")


def probabilities(outputs: Tensor) -> str | None:
    """Outputs ``(N, C, ...)`` that are non-negative and sum to 1 over classes: probabilities, not logits.

    The losses apply a softmax themselves; a softmax of probabilities is
    nearly uniform, which trains slowly and makes every calibration number
    meaningless.
    """
    if outputs.numel() == 0 or not outputs.is_floating_point() or not bool(torch.isfinite(outputs).all()):
        return None
    sums = outputs.double().sum(1)
    if bool((outputs >= 0).all()) and bool(((sums - 1).abs() <= SUM_TOLERANCE).all()):
        return ("the model's outputs are already probabilities (non-negative, summing to 1 over classes); "
                "compare expects logits: remove the final softmax")
    return None

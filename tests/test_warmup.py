"""``compare(warmup_epochs=K)``: every alpha trains with plain cross-entropy for K epochs, then smooths.

Oracle: the baseline run (alpha 0) of the same seed. Before the switch both
runs optimize the same loss from the same initialization and data order, so
their histories agree bit for bit; after it they part.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from labelsmooth.experiments import compare

pytestmark = pytest.mark.usefixtures("quick_figures")


def blobs(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centers = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return TensorDataset(centers[labels] / 2 + 0.8 * torch.randn(n, 2, generator=generator), labels)


def linear(num_classes: int) -> nn.Module:
    return nn.Linear(2, num_classes)


def histories(warmup: int) -> dict[float, list[dict]]:
    result = compare(model=linear, train=blobs(60, 1), val=blobs(60, 2), test=blobs(60, 3),
                     alphas=[0.0, -0.2], seeds=1, ci=False, epochs=3, batch_size=20, lr=0.05,
                     allow_negative=True, warmup_epochs=warmup)
    return {run.alpha: run.history for run in result.runs}


def _losses(history: list[dict]) -> list[tuple[float, float]]:
    return [(epoch["train_loss"], epoch["val_loss"]) for epoch in history]


def test_alphas_train_as_the_baseline_until_the_warmup_ends():
    runs = histories(warmup=2)
    baseline, negative = _losses(runs[0.0]), _losses(runs[-0.2])
    assert negative[:2] == baseline[:2]  # the same loss, initialization and data order: the same bits
    assert negative[2][0] != baseline[2][0]  # then the negative target is trained on
    unwarmed = _losses(histories(warmup=0)[-0.2])
    assert unwarmed[0][0] != baseline[0][0]  # without a warm-up it smooths from the first step


def test_a_warmup_as_long_as_training_is_refused():
    too_long = r"warmup_epochs: expected an int in \[0, epochs\) = \[0, 3\), got 3"
    with pytest.raises(ValueError, match=too_long):
        histories(warmup=3)
    with pytest.raises(ValueError, match=r"warmup_epochs: expected an int >= 0, got -1"):
        histories(warmup=-1)

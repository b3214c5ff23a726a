"""The run that both sweep examples launch: train a small MLP with one (alpha, seed), write its record.

A run is a pure function of (alpha, seed): the same record wherever a scheduler places it. The data
(three Gaussian blobs in 8 dimensions, fixed by their own seed) is the same for every run, so every
record holds the same test examples, as ``labelsmooth compare --runs`` requires.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from labelsmooth.experiments import save_run

SETTINGS = {"model": "mlp-8-32-3", "epochs": 30, "lr": 0.05, "data": "blobs-seed-123"}


def _blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, 3, (n,), generator=generator)
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(7)) * 0.6
    return centers[labels] + torch.randn(n, 8, generator=generator), labels


def train_and_save(folder: str | Path, alpha: float, seed: int) -> Path:
    """Train with label smoothing ``alpha`` from ``seed``; write ``folder/alpha{alpha}_seed{seed}.npz``."""
    data = torch.Generator().manual_seed(123)
    (x, y), val, test = _blobs(256, data), _blobs(128, data), _blobs(256, data)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=SETTINGS["lr"], momentum=0.9)
    history = []
    for epoch in range(SETTINGS["epochs"]):
        loss = F.cross_entropy(model(x), y, label_smoothing=alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({"epoch": epoch, "train_loss": loss.item()})
    with torch.no_grad():
        splits = {name: (model(inputs), labels) for name, (inputs, labels) in (("val", val), ("test", test))}
    path = Path(folder) / f"alpha{alpha:g}_seed{seed}.npz"
    return save_run(path, alpha=alpha, seed=seed, settings=SETTINGS, history=history, **splits)

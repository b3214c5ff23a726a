"""Does label smoothing help *your* model? ``compare`` with your own network and data.

Any ``callable(num_classes) -> nn.Module`` that returns logits, and any torch Datasets of
``(input, label)`` pairs, will do. Here: a small residual MLP on three interleaved noisy spiral arms.

    python examples/compare_your_model.py [OUT]     (default OUT: runs/compare_your_model)

The same from the command line, with this file on the path:

    labelsmooth compare --model compare_your_model:make_model --data compare_your_model:load --out OUT
"""

import math
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from labelsmooth.experiments import compare


class SpiralNet(nn.Module):
    """Two residual blocks; the last ``nn.Linear`` (``classify``) gets the penultimate features."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(2, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(2))
        self.classify = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.classify(h)


def make_model(num_classes: int) -> nn.Module:
    return SpiralNet(num_classes)


def spirals(n: int, *, seed: int, classes: int = 3, noise: float = 0.15) -> TensorDataset:
    """``n`` points on ``classes`` interleaved spiral arms, with Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    radius = torch.rand(n, generator=generator)
    angle = radius * 1.5 * math.pi + labels * (2 * math.pi / classes)
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return TensorDataset(points + noise * torch.randn(n, 2, generator=generator) * radius[:, None], labels)


def load():
    """``--data``'s loader: (train, test); compare holds 10% of train out for the validation curves."""
    return spirals(800, seed=0), spirals(300, seed=1)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/compare_your_model"
    train, test = load()
    result = compare(model=make_model, train=train, test=test, alphas=(0.0, 0.1), seeds=3, epochs=12,
                     batch_size=64, lr=3e-3, out=out, overwrite=True)
    for row in result.summary:
        print(f"alpha={row['alpha']:g}: accuracy {100 * row['accuracy_mean']:.1f}%, "
              f"NLL {row['nll_mean']:.3f}, ECE {row['ece_mean']:.3f}; after temperature scaling "
              f"(T = {row['temperature_mean']:.2f}): NLL {row['nll_ts_mean']:.3f}, "
              f"ECE {row['ece_ts_mean']:.3f}")
    for c in result.comparisons:
        if c["scaling"] == "baseline":  # alpha at T = 1 against the temperature-scaled baseline
            print(f"{c['metric']} at alpha={c['alpha']:g} against temperature scaling at "
                  f"alpha={c['baseline_alpha']:g}: {c['verdict']}")
    print(f"learned: {all(run.learned for run in result.runs)}; report: {out}/report.md")

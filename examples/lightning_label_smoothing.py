"""Label smoothing in a Lightning training loop: one callback and one ``with`` around the loss.

Run it on one CPU process, or with DDP on two::

    python examples/lightning_label_smoothing.py
    python examples/lightning_label_smoothing.py --strategy ddp --devices 2

Each training step checks the smoothed loss against PyTorch's
``cross_entropy(label_smoothing=...)`` and each process prints one summary line.
"""

from __future__ import annotations

import argparse
import sys

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import labelsmooth as ls
from labelsmooth.integrations.lightning import AlgorithmsCallback, loss_events

ALPHA = 0.1


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
        self.max_gap = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        with loss_events(self, batch, logits) as state:  # LabelSmoothing swaps in smoothed targets here
            loss = ls.soft_cross_entropy(logits, state.batch[1])
        reference = F.cross_entropy(logits, y, label_smoothing=ALPHA)
        self.max_gap = max(self.max_gap, abs(float(loss.detach() - reference.detach())))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    L.seed_everything(0, verbose=False)
    data = TensorDataset(torch.randn(64, 16), torch.randint(0, 5, (64,)))
    model = Classifier()
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=args.strategy, max_steps=args.steps,
        callbacks=[AlgorithmsCallback([ls.LabelSmoothing(ALPHA)])],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
    line = (
        f"rank {trainer.global_rank}/{trainer.world_size}: steps {trainer.global_step}, "
        f"max |loss - torch label_smoothing| {model.max_gap:.2e}, parameter checksum {checksum:.10f}\n"
    )
    # One write with its newline: the DDP ranks share this stream, and print() writes the end separately.
    sys.stdout.write(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

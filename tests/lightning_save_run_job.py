"""A Lightning fit with the SaveRun callback, run as a script (strategy="ddp" relaunches it per rank).

    python tests/lightning_save_run_job.py OUT_FOLDER [--strategy ddp --devices 2] [--alpha A]
        [--epochs E] [--monitor val_loss --mode min|max]

Writes OUT_FOLDER/record.npz (the callback) and OUT_FOLDER/weights.pt (rank 0: the fitted weights),
and, for each validation, OUT_FOLDER/epoch{k}.pt: the weights and val_loss then (k from 1).
Test split: 11 examples (odd, so DDP's padding sampler would repeat one); val: 7.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from labelsmooth.integrations.lightning import SaveRun

SIZES = {"train": 16, "val": 7, "test": 11}


def dataset(split: str) -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(list(SIZES).index(split))
    inputs = torch.randn(SIZES[split], 6, generator=gen)
    return torch.utils.data.TensorDataset(inputs, torch.randint(0, 4, (SIZES[split],), generator=gen))


class Data(L.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(dataset("train"), batch_size=4)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(dataset("val"), batch_size=3)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(dataset("test"), batch_size=3)


class Model(L.LightningModule):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(6, 4)
        self.alpha = alpha

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch[0]), batch[1], label_smoothing=self.alpha)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class KeepEpochs(L.Callback):
    """Every validated epoch's weights and val_loss, saved by rank 0 (the test's own record of them)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.is_global_zero:
            saved = {"state": pl_module.state_dict(), "val_loss": float(trainer.callback_metrics["val_loss"])}
            torch.save(saved, self.out / f"epoch{trainer.current_epoch + 1}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--monitor", default=None)
    parser.add_argument("--mode", default="min")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    save = SaveRun(args.out / "record.npz", alpha=args.alpha, seed=0, settings={"model": "linear"},
                   monitor=args.monitor, mode=args.mode)
    model = Model(args.alpha)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=args.strategy, max_epochs=args.epochs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[KeepEpochs(args.out), save],
    )
    trainer.fit(model, datamodule=Data())
    if trainer.is_global_zero:
        torch.save(model.state_dict(), args.out / "weights.pt")


if __name__ == "__main__":
    main()

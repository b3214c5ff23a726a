"""``SaveRun``: a Lightning callback that writes the fitted model's run record (``labelsmooth.experiments``).

Lightning's ``validate`` and ``test`` under DDP shard the data with a
``DistributedSampler`` that pads the ranks to equal length by repeating
examples, so their gathered outputs count some examples twice. This callback
does not use them: every rank predicts its own unpadded stride of the data
set (rank ``r`` of ``W`` takes indices ``r, r + W, ...``), the strides are
gathered, and global rank 0 writes one row per example, its dataset index as
its id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, Dataset, Subset

from labelsmooth import _validation as v
from labelsmooth.experiments._records import SUFFIXES, save_run

__all__ = ["SaveRun"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def _loader(loaders: object, split: str) -> DataLoader[Any] | None:
    """The one loader of ``loaders`` (a loader, or a list holding one)."""
    if loaders is None:
        return None
    if isinstance(loaders, Sequence) and not isinstance(loaders, DataLoader):
        if len(loaders) != 1:
            raise v.fail(split, "one DataLoader", f"{len(loaders)} loaders")
        loaders = loaders[0]
    if not isinstance(loaders, DataLoader):
        raise v.fail(split, "a torch DataLoader", type(loaders).__name__, error=TypeError)
    return loaders


def _shard(loader: DataLoader[Any], rank: int, world: int) -> tuple[DataLoader[Any], np.ndarray]:
    """This rank's stride of ``loader``'s data set, in order, and the dataset indices it holds."""
    dataset: Dataset[Any] = loader.dataset
    indices = np.arange(rank, len(dataset), world, dtype=np.int64)  # type: ignore[arg-type]
    shard = DataLoader(Subset(dataset, indices.tolist()), batch_size=loader.batch_size or 1,
                       collate_fn=loader.collate_fn, num_workers=loader.num_workers)
    return shard, indices


def _predict(module: pl.LightningModule, batches: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits ``(n, C, ...)`` of ``module(batch[0])`` and the labels ``batch[1]``."""
    logits, labels = [], []
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = move_data_to_device(batch, module.device)
                logits.append(module(batch[0]).detach().float().cpu())
                labels.append(batch[1].detach().cpu())
    finally:
        module.train(training)
    return torch.cat(logits).numpy(), torch.cat(labels).long().numpy()


def _gather(part: Split) -> Split:
    """Every rank's rows on every rank, by dataset index (each index appears once)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return part
    parts: list[Split | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    logits, labels, ids = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    order = np.argsort(ids, kind="stable")
    return logits[order], labels[order], ids[order]


class SaveRun(pl.Callback):
    """Write the run record of a fitted model: its val and test logits, labels and dataset indices.

    At the end of ``fit`` each split is predicted as ``module(batch[0])``
    with labels ``batch[1]``, in eval mode without gradients, every rank on
    its own unpadded share; global rank 0 writes ``path`` with
    :func:`labelsmooth.experiments.save_run`, and every rank waits for it.
    The history is ``trainer.callback_metrics`` at the end of every training
    epoch (log ``train_loss`` for the "did not learn" check).

    Args:
        path: the ``.npz`` or ``.pt`` file to write (one per (alpha, seed) run).
        alpha, seed: the run's smoothing and seed.
        settings: the run's other settings (the runs of one comparison must agree).
        test, val: a ``DataLoader`` each; by default the datamodule's
            ``test_dataloader()`` and the fit's validation loader (``val``
            may be absent: no temperature scaling then).
        convention, ignore_index, class_names: stored in the record's meta.

    Example::

        trainer = lightning.Trainer(callbacks=[SaveRun("runs/a0.1_s0.npz", alpha=0.1, seed=0)])
        trainer.fit(model, datamodule=data)    # then: labelsmooth compare --runs runs/
    """

    def __init__(self, path: str | os.PathLike[str], *, alpha: float, seed: int,
                 settings: dict[str, Any] | None = None, test: DataLoader[Any] | None = None,
                 val: DataLoader[Any] | None = None, convention: str | None = None,
                 ignore_index: int | None = None, class_names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix not in SUFFIXES:
            raise v.fail("path", f"a file name ending in {' or '.join(SUFFIXES)}", str(path))
        # Records of negative smoothing are compared too: alpha in [-1, 1].
        self.alpha = v.check_smoothing_mass(alpha, allow_negative=True)
        self.seed = v.check_int(seed, "seed")
        self.meta = {"settings": settings, "convention": convention, "ignore_index": ignore_index,
                     "class_names": class_names}
        self.test, self.val = _loader(test, "test"), _loader(val, "val")
        self.history: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"SaveRun({str(self.path)!r}, alpha={self.alpha:g}, seed={self.seed})"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                   if isinstance(value, torch.Tensor) and value.numel() == 1}
        self.history.append({"epoch": trainer.current_epoch, **metrics})

    def _split(self, trainer: pl.Trainer, module: pl.LightningModule, split: str) -> Split | None:
        loader = self.test if split == "test" else self.val
        if loader is None and split == "test":
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is not None and is_overridden("test_dataloader", datamodule):
                loader = _loader(datamodule.test_dataloader(), "test")
            if loader is None:
                raise v.fail("test", "a DataLoader (SaveRun(test=...) or a datamodule's test_dataloader)",
                             None)
        if loader is None:
            loader = _loader(trainer.val_dataloaders, "val")
        if loader is None:
            return None
        shard, ids = _shard(loader, trainer.global_rank, trainer.world_size)
        logits, labels = _predict(module, shard)
        return _gather((logits, labels, ids))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        test = self._split(trainer, pl_module, "test")
        val = self._split(trainer, pl_module, "val")
        if trainer.is_global_zero:
            save_run(self.path, alpha=self.alpha, seed=self.seed, test=test,  # type: ignore[arg-type]
                     val=val, history=self.history or None, **self.meta)  # type: ignore[arg-type]
        trainer.strategy.barrier("SaveRun")

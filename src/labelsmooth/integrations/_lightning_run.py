"""``SaveRun``: a Lightning callback that writes the fitted model's run record (``labelsmooth.experiments``).

Lightning's ``validate`` and ``test`` under DDP shard the data with a
``DistributedSampler`` that pads the ranks to equal length by repeating
examples, so their gathered outputs count some examples twice. This callback
does not use them: every rank predicts its own unpadded stride of the data
set (rank ``r`` of ``W`` takes indices ``r, r + W, ...``), the strides are
gathered, and global rank 0 writes one row per example, its dataset index as
its id.

With ``monitor``, the callback also keeps, on the CPU, a copy of the weights
of the epoch whose validation value was best (the rule of ``labelsmooth
compare``'s own early stopping: a strict improvement, ties keep the earlier
epoch, non-finite values never count), and writes their predictions as the
early-stopped logits, so that ``compare --runs`` can ask whether smoothing
beats early stopping, the regularizer every trainer already has.
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
from labelsmooth.experiments.train import Checkpoint

__all__ = ["SaveRun"]

Split = tuple[np.ndarray, np.ndarray, np.ndarray]

#: ``mode``'s values, Lightning's ``ModelCheckpoint``'s words: lower or higher is better.
MODES = ("min", "max")


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
        monitor: a validation value in ``trainer.callback_metrics`` (for
            example ``"val_loss"``): the record then also holds the
            predictions of the epoch where it was best (``test_es_logits``,
            ``val_es_logits``, ``best_epoch``). Costs one copy of the
            weights in CPU memory.
        mode: ``"min"`` (lower ``monitor`` is better) or ``"max"``.

    Example::

        trainer = lightning.Trainer(callbacks=[SaveRun("runs/a0.1_s0.npz", alpha=0.1, seed=0)])
        trainer.fit(model, datamodule=data)    # then: labelsmooth compare --runs runs/
    """

    def __init__(self, path: str | os.PathLike[str], *, alpha: float, seed: int,
                 settings: dict[str, Any] | None = None, test: DataLoader[Any] | None = None,
                 val: DataLoader[Any] | None = None, convention: str | None = None,
                 ignore_index: int | None = None, class_names: Sequence[str] | None = None,
                 monitor: str | None = None, mode: str = "min") -> None:
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
        if monitor is not None and not isinstance(monitor, str):
            raise v.fail("monitor", "a metric name (str) or None", monitor, error=TypeError)
        self.monitor, self.mode = monitor, v.check_choice(mode, "mode", MODES)
        self.best: Checkpoint | None = None
        self.best_step = -1

    def __repr__(self) -> str:
        return f"SaveRun({str(self.path)!r}, alpha={self.alpha:g}, seed={self.seed})"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                   if isinstance(value, torch.Tensor) and value.numel() == 1}
        self.history.append({"epoch": trainer.current_epoch, **metrics})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            shown = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise v.fail("monitor", f"a value logged in validation (logged: {shown})", self.monitor)
        # Rank 0's value decides on every rank: the ranks' weights, and so their shares of the predictions,
        # must come from one epoch also when the value was logged without sync_dist.
        local = float(value) * (1.0 if self.mode == "min" else -1.0)
        best = Checkpoint.better(self.best, pl_module, trainer.current_epoch + 1,
                                 float(trainer.strategy.broadcast(local, src=0)))
        if best is not self.best:
            self.best, self.best_step = best, trainer.global_step

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
        stopped = self._early_stopped(trainer, pl_module, test, val)
        if trainer.is_global_zero:
            save_run(self.path, alpha=self.alpha, seed=self.seed, test=test,  # type: ignore[arg-type]
                     val=val, history=self.history or None, **stopped, **self.meta)  # type: ignore[arg-type]
        trainer.strategy.barrier("SaveRun")

    def _early_stopped(self, trainer: pl.Trainer, module: pl.LightningModule, test: Split | None,
                       val: Split | None) -> dict[str, Any]:
        """``save_run``'s early-stopping arguments: the best epoch's logits (the final ones when no
        step followed it); the final weights are back in ``module`` afterwards."""
        if self.monitor is None:
            return {}
        if self.best is None:
            raise v.fail("monitor", "a validation value that was finite at least once (the fit never "
                         "validated, or diverged)", self.monitor)
        if self.best_step == trainer.global_step:  # no step since: the final weights are the best
            logits = (None if test is None else test[0], None if val is None else val[0])
        else:
            with self.best.loaded_into(module):
                stopped = (self._split(trainer, module, "test"), self._split(trainer, module, "val"))
            logits = tuple(None if split is None else split[0] for split in stopped)  # type: ignore[assignment]
        return {"best_epoch": self.best.epoch, "test_es_logits": logits[0], "val_es_logits": logits[1]}

"""SaveRun writes the record that save_run writes from the same logits, on one process and under DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

import lightning_save_run_job as job
from gloo_helpers import free_port
from labelsmooth.experiments import compare_runs, read_run, save_run
from labelsmooth.integrations.lightning import SaveRun

JOB = Path(job.__file__)


def _reference(folder: Path, alpha: float) -> Path:
    """save_run's record from the logits of the weights the fit ended with, on the whole splits."""
    model = job.Model(alpha)
    model.load_state_dict(torch.load(folder / "weights.pt"))
    splits = {}
    with torch.no_grad():
        for name in ("test", "val"):
            inputs, labels = job.dataset(name).tensors
            splits[name] = (model(inputs), labels, torch.arange(len(labels)))
    history = read_run(folder / "record.npz").history
    return save_run(folder / "reference.npz", alpha=alpha, seed=0, settings={"model": "linear"},
                    history=history, **splits)


def _assert_same_record(path: Path, reference: Path) -> None:
    ours, theirs = read_run(path), read_run(reference)
    assert ours.meta() == theirs.meta() | ({"best_epoch": ours.best_epoch} if ours.best_epoch else {})
    for name in ("test", "val"):
        a, b = getattr(ours, name), getattr(theirs, name)
        np.testing.assert_array_equal(a.ids, np.arange(job.SIZES[name]))  # every example once, in order
        np.testing.assert_array_equal(a.labels, b.labels)
        # Batches of 3 against one matmul over the split: the same numbers up to float32 rounding.
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-6, atol=1e-6)


def _run(out: Path, *args: str, alpha: float = 0.1) -> None:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(JOB), str(out), "--alpha", str(alpha), *args],
                            capture_output=True, text=True, env=env, timeout=300)  # a hang guard only
    assert result.returncode == 0, result.stderr[-3000:]


def test_fit_writes_the_record_save_run_writes(tmp_path, monkeypatch):
    for alpha in (0.0, 0.1):
        out = tmp_path / f"alpha{alpha}"
        monkeypatch.setattr(sys, "argv", ["job", str(out), "--alpha", str(alpha)])
        job.main()
        _assert_same_record(out / "record.npz", _reference(out, alpha))
        assert [entry["epoch"] for entry in read_run(out / "record.npz").history] == [0, 1]
        assert "train_loss" in read_run(out / "record.npz").history[0]
    result = compare_runs([tmp_path / "alpha0.0" / "record.npz", tmp_path / "alpha0.1" / "record.npz"])
    assert [run.alpha for run in result.runs] == [0.0, 0.1]


def _predict(state: dict[str, torch.Tensor], split: str) -> np.ndarray:
    model = job.Model(0.1)
    model.load_state_dict(state)
    with torch.no_grad():
        return model(job.dataset(split).tensors[0]).numpy()


def _assert_best_epoch(folder: Path, mode: str) -> int:
    """The record's early-stopped logits are those of the epoch the job's own saves say was best."""
    saved = sorted(folder.glob("epoch*.pt"))
    epochs = {int(path.stem.removeprefix("epoch")): torch.load(path) for path in saved}
    losses = {k: epoch["val_loss"] for k, epoch in epochs.items()}
    best = (min if mode == "min" else max)(losses, key=losses.__getitem__)
    record = read_run(folder / "record.npz")
    assert record.best_epoch == best and len(set(losses.values())) == len(losses)  # no tie to break
    for split in ("test", "val"):
        np.testing.assert_allclose(getattr(record, split).es_logits, _predict(epochs[best]["state"], split),
                                   rtol=1e-6, atol=1e-6)
    return best


@pytest.mark.parametrize("mode", ["min", "max"])
def test_monitor_writes_the_predictions_of_the_best_epoch(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(sys, "argv", ["job", str(tmp_path), "--epochs", "3", "--monitor", "val_loss",
                                      "--mode", mode])
    job.main()
    # On this data val_loss is lowest at epoch 2 and highest at 3: the modes take both paths, the
    # reloaded earlier epoch and the final weights.
    assert _assert_best_epoch(tmp_path, mode) == {"min": 2, "max": 3}[mode]
    _assert_same_record(tmp_path / "record.npz", _reference(tmp_path, 0.1))  # the final logits stay


def test_a_monitor_that_is_not_logged_is_refused_naming_what_is():
    from lightning import Trainer

    save = SaveRun("x.npz", alpha=0.1, seed=0, monitor="val_acc")
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[save])
    refused = r"monitor: expected a value logged in validation \(logged: .*val_loss"
    with pytest.raises(ValueError, match=refused):
        trainer.fit(job.Model(0.1), datamodule=job.Data())
    with pytest.raises(ValueError, match="mode: expected one of"):
        SaveRun("x.npz", alpha=0.1, seed=0, monitor="val_loss", mode="lowest")


@pytest.mark.slow  # two Lightning processes start and rendezvous: about 25 s on 2 cores
def test_ddp_on_two_processes_writes_each_example_once(tmp_path):
    _run(tmp_path, "--strategy", "ddp", "--devices", "2", "--epochs", "3", "--monitor", "val_loss")
    _assert_same_record(tmp_path / "record.npz", _reference(tmp_path, 0.1))
    _assert_best_epoch(tmp_path, "min")  # rank 0's val_loss chose the epoch for both ranks

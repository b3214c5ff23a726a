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
    assert ours.meta() == theirs.meta()
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


@pytest.mark.slow  # two Lightning processes start and rendezvous: about 25 s on 2 cores
def test_ddp_on_two_processes_writes_each_example_once(tmp_path):
    _run(tmp_path, "--strategy", "ddp", "--devices", "2")
    _assert_same_record(tmp_path / "record.npz", _reference(tmp_path, 0.1))

"""labelsmooth.integrations.lightning in a real lightning.Trainer on CPU (one process, and DDP with two)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from gloo_helpers import free_port
from labelsmooth import Event

L = pytest.importorskip("lightning")
from labelsmooth.integrations.lightning import (  # noqa: E402 (after the importorskip)
    AlgorithmsCallback,
    algorithm_step,
    loss_events,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STEP_EVENTS = [
    Event.BATCH_START, Event.BEFORE_TRAIN_BATCH, Event.BEFORE_FORWARD, Event.AFTER_FORWARD,
    Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.BEFORE_BACKWARD, Event.AFTER_BACKWARD,
    Event.AFTER_TRAIN_BATCH, Event.BATCH_END,
]


class Recorder(ls.Algorithm):
    """Records every event it sees, and the type of the targets at the loss events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.targets_dtype: dict[Event, torch.dtype] = {}

    def match(self, event, state):
        return True

    def apply(self, event, state, logger):
        self.events.append(event)
        if event in (Event.BEFORE_LOSS, Event.AFTER_LOSS):
            self.targets_dtype[event] = state.batch[1].dtype


class ZeroInputs(ls.Algorithm):
    """Changes the inputs at BEFORE_FORWARD, as MixUp would."""

    def match(self, event, state):
        return event is Event.BEFORE_FORWARD

    def apply(self, event, state, logger):
        state.batch_set_item(0, torch.zeros_like(state.batch_get_item(0)))


class Model(L.LightningModule):
    def __init__(self, whole_step: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(6, 4)
        self.whole_step = whole_step
        self.seen: list[dict] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.whole_step:
            loss = algorithm_step(self, batch, forward=self._forward_batch, loss=self._loss)
            self.seen.append({"y": batch[1], "loss": loss.detach()})
            return loss
        logits = self(batch[0])
        with loss_events(self, batch, logits) as state:
            loss = ls.soft_cross_entropy(logits, state.batch[1])
            inside = state.batch[1]
        self.seen.append({"logits": logits.detach(), "y": batch[1], "loss": loss.detach(), "inside": inside})
        return loss

    def _forward_batch(self, batch):
        logits = self(batch[0])
        self.seen.append({"inputs": batch[0], "logits": logits.detach()})
        return logits

    def _loss(self, outputs, batch):
        return ls.soft_cross_entropy(outputs, batch[1])

    def validation_step(self, batch, batch_idx):
        logits = self(batch[0])
        with loss_events(self, batch, logits) as state:
            loss = ls.soft_cross_entropy(logits, state.batch[1])
        self.seen.append({"val_loss": loss.detach(), "logits": logits, "y": batch[1]})
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    gen = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(12, 6, generator=gen), torch.randint(0, 4, (12,), generator=gen)
    data = torch.utils.data.TensorDataset(inputs, targets)
    return torch.utils.data.DataLoader(data, batch_size=4)


def _fit(model, algorithms, *, val=False, steps=2):
    callback = AlgorithmsCallback(algorithms)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1 if val else 0, val_check_interval=1 if val else None,
    )
    trainer.fit(model, _loader(), _loader() if val else None)
    return callback


def test_fit_smooths_training_loss_and_restores_targets():
    model = Model()
    recorder = Recorder()
    _fit(model, [ls.LabelSmoothing(0.1), recorder], val=True)
    train = [s for s in model.seen if "loss" in s]
    assert len(train) == 2
    for step in train:
        expected = F.cross_entropy(step["logits"], step["y"], label_smoothing=0.1)
        torch.testing.assert_close(step["loss"], expected)
        assert step["inside"].shape == step["logits"].shape  # dense smoothed targets inside the block
    assert recorder.targets_dtype[Event.BEFORE_LOSS] == torch.float32  # after LabelSmoothing (list order)
    assert recorder.targets_dtype[Event.AFTER_LOSS] == torch.float32  # before it restores (reverse order)
    val = [s for s in model.seen if "val_loss" in s]
    assert val
    for step in val:
        torch.testing.assert_close(step["val_loss"], F.cross_entropy(step["logits"], step["y"]))


def test_events_follow_lightning_loop_order():
    model = Model()
    recorder = Recorder()
    _fit(model, [recorder], val=True, steps=1)
    expected_step = [e for e in STEP_EVENTS if e not in (Event.BEFORE_FORWARD, Event.AFTER_FORWARD)]
    step = [e for e in recorder.events if e in STEP_EVENTS]
    assert step == expected_step
    assert recorder.events[:3] == [Event.INIT, Event.FIT_START, Event.EPOCH_START]
    assert recorder.events[-1] is Event.FIT_END
    assert Event.EVAL_BATCH_START in recorder.events
    assert Event.BEFORE_LOSS not in recorder.events[recorder.events.index(Event.EVAL_START):]


def test_algorithm_step_runs_forward_events_on_the_changed_batch():
    model = Model(whole_step=True)
    bias = model.net.bias.detach().clone()
    recorder = Recorder()
    callback = _fit(model, [ZeroInputs(), ls.LabelSmoothing(0.2), recorder], steps=1)
    assert [e for e in recorder.events if e in STEP_EVENTS] == STEP_EVENTS
    inputs, step = model.seen
    assert not inputs["inputs"].any()  # the forward saw the batch ZeroInputs left
    expected = F.cross_entropy(bias.expand(4, 4), step["y"], label_smoothing=0.2)
    torch.testing.assert_close(step["loss"], expected)  # zero inputs: the logits are the bias
    assert not callback.engine.state.batch[1].is_floating_point()  # targets restored after AFTER_LOSS


def test_mixup_and_label_smoothing_through_algorithm_step():
    model = Model(whole_step=True)
    mixup = ls.MixUp(alpha=0.4, seed=0)
    _fit(model, [mixup, ls.LabelSmoothing(0.1)], steps=1)
    x, y = next(iter(_loader()))
    lam, perm = mixup.mixing, mixup.permutation
    forward, step = model.seen
    torch.testing.assert_close(forward["inputs"], (1 - lam) * x + lam * x[perm])
    logits = forward["logits"]
    expected = (1 - lam) * F.cross_entropy(logits, y, label_smoothing=0.1) + lam * F.cross_entropy(
        logits, y[perm], label_smoothing=0.1
    )
    torch.testing.assert_close(step["loss"], expected)


def test_without_callback_nothing_runs():
    model = Model()
    batch = (torch.randn(2, 6), torch.tensor([1, 3]))
    logits = model(batch[0])
    with loss_events(model, batch, logits) as state:
        assert state.batch is batch
    loss = algorithm_step(model, batch, forward=model._forward_batch, loss=model._loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch[1]))


def test_callback_state_dict_round_trip():
    callback = AlgorithmsCallback([ls.LabelSmoothing(0.3)])
    state = callback.state_dict()
    assert state["algorithms"][0]["hparams"]["alpha"] == 0.3
    callback.load_state_dict(state)
    assert "LabelSmoothing(alpha=0.3" in repr(callback)


_SUMMARY = re.compile(
    r"rank (\d)/(\d): steps 3, max \|loss - torch label_smoothing\| (\S+), parameter checksum (-?\d+\.\d{10})"
)


def test_example_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lightning_label_smoothing.py", "--steps", "3"])
    runpy.run_path(str(EXAMPLES / "lightning_label_smoothing.py"), run_name="__main__")
    out = capsys.readouterr().out
    (line,) = _SUMMARY.findall(out)
    assert line[:2] == ("0", "1")
    assert float(line[2]) < 1e-5


def test_example_runs_with_ddp_on_two_processes():
    """strategy="ddp" relaunches the script for rank 1, so the example runs as a script here."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "lightning_label_smoothing.py"), "--steps", "3",
         "--strategy", "ddp", "--devices", "2"],
        capture_output=True, text=True, env=env, timeout=300,  # a hang guard only
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _SUMMARY.findall(result.stdout)
    assert sorted(int(rank) for rank, *_ in lines) == [0, 1], result.stdout + result.stderr[-3000:]
    assert all(world == "2" for _, world, *_ in lines)
    assert all(float(gap) < 1e-5 for *_, gap, _ in lines)
    assert len({checksum for *_, checksum in lines}) == 1  # DDP kept the replicas identical

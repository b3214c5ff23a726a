"""TRL's SFTTrainer with ``compute_loss_func=CausalLMLoss(...)``: its loss is the plain smoothed loss.

``examples/trl_sft_label_smoothing.py`` trains a tiny Llama built from a
config with a tokenizer built from a word list (nothing is downloaded). The
first logged step loss is that of the untrained model on the whole data set,
which is computed here independently: one padded batch, ``F.cross_entropy``
with ``label_smoothing`` on the shifted labels.
"""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl")

from labelsmooth.integrations.transformers import CausalLMLoss

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl_sft_label_smoothing.py"
ALPHA = 0.1


@pytest.fixture(scope="module")
def example():
    """The example as a module (its functions, without running main())."""
    spec = importlib.util.spec_from_file_location("trl_sft_label_smoothing", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(example):
    """(trainer, untrained model) after two steps, with CausalLMLoss and with TRL's default loss."""
    return {
        "smoothed": example.train(2, compute_loss_func=CausalLMLoss(alpha=ALPHA)),
        "default": example.train(2),
    }


def _smoothed_mean(trainer, model, alpha):
    """F.cross_entropy(label_smoothing=alpha) over every shifted label of the data set, one padded batch."""
    sequences = [torch.tensor(ids) for ids in trainer.train_dataset["input_ids"]]
    input_ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=0)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(s) for s in sequences], batch_first=True)
    labels = input_ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits.double()
    shifted_logits, shifted_labels = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
    return float(F.cross_entropy(shifted_logits, shifted_labels, label_smoothing=alpha))


def _first_loss(trainer) -> float:
    return next(log["loss"] for log in trainer.state.log_history if "loss" in log)


@pytest.mark.parametrize(
    ("run", "alpha"), [("smoothed", ALPHA), ("default", 0.0)], ids=["causal-lm-loss", "trl-default"]
)
def test_first_step_loss_is_the_plain_loss_of_the_batch(trained, run, alpha):
    """CausalLMLoss gives the smoothed loss; TRL's default gives the unsmoothed one (no smoothing)."""
    trainer, untrained = trained[run]
    assert _first_loss(trainer) == pytest.approx(_smoothed_mean(trainer, untrained, alpha), rel=1e-6)


def test_the_two_losses_differ(trained):
    """The comparison above can fail: the smoothed loss is not TRL's default one."""
    trainer, untrained = trained["smoothed"]
    assert abs(_smoothed_mean(trainer, untrained, ALPHA) - _smoothed_mean(trainer, untrained, 0.0)) > 1e-4
    assert abs(_first_loss(trainer) - _first_loss(trained["default"][0])) > 1e-4


def test_the_batch_has_padding(trained):
    """Uneven lengths: the collator pads, and the padded labels are left out."""
    lengths = {len(ids) for ids in trained["smoothed"][0].train_dataset["input_ids"]}
    assert len(lengths) > 1


def test_example_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["trl_sft_label_smoothing.py", "--steps", "1"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    pairs = re.findall(r"step 1 (\S+) vs F\.cross_entropy\(label_smoothing=\S+\) (\S+)", out)
    assert len(pairs) == 2
    for logged, reference in pairs:
        assert float(logged) == pytest.approx(float(reference), abs=2e-6)

"""integrations.transformers against Trainer(label_smoothing_factor=...) on a tiny GPT-2 built here."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import runpy
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the model is built from a config

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers.trainer_pt_utils import LabelSmoother  # noqa: E402

from labelsmooth.integrations.transformers import CausalLMLoss  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VOCAB = 64


def _reference(logits, labels, alpha, num_items=None, convention="uniform"):
    """Shifted F.cross_entropy in float64, summed and divided by num_items (or the token count)."""
    smoothing = alpha * VOCAB / (VOCAB - 1) if convention == "others" else alpha
    shifted_logits = logits[:, :-1].double()
    shifted_labels = labels[:, 1:]
    total = F.cross_entropy(
        shifted_logits.reshape(-1, logits.shape[-1]), shifted_labels.reshape(-1), reduction="sum",
        label_smoothing=smoothing,
    )
    count = (shifted_labels != -100).sum() if num_items is None else num_items
    return total / count


def _batch(seed=0, batch=3, length=7):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, VOCAB, generator=gen) * 2
    labels = torch.randint(0, VOCAB, (batch, length), generator=gen)
    labels[0, 4:] = -100
    labels[2, :2] = -100
    return logits, labels


@pytest.mark.parametrize("num_items", [None, 11, torch.tensor(23)], ids=["local", "int", "tensor"])
@pytest.mark.parametrize("convention", ["uniform", "others"])
def test_loss_equals_shifted_reference(num_items, convention):
    logits, labels = _batch()
    logits.requires_grad_()
    loss = CausalLMLoss(0.1, convention=convention)(logits, labels, num_items_in_batch=num_items)
    expected = _reference(logits, labels, 0.1, num_items, convention)
    torch.testing.assert_close(loss, expected.float())
    grad, = torch.autograd.grad(loss, logits)
    expected_grad, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("num_items", [None, 11], ids=["local", "num-items"])
def test_uniform_equals_label_smoother(num_items):
    logits, labels = _batch(seed=1)
    smoother_args = inspect.signature(LabelSmoother.__call__).parameters
    if num_items is not None and "num_items_in_batch" not in smoother_args:
        pytest.skip("this transformers' LabelSmoother normalizes each micro-batch by its own count")
    ours = CausalLMLoss(0.2)({"logits": logits}, labels, num_items_in_batch=num_items)
    smoother = LabelSmoother(epsilon=0.2)
    theirs = smoother({"logits": logits}, labels, shift_labels=True, num_items_in_batch=num_items)
    torch.testing.assert_close(ours, theirs)


def test_shift_labels_and_no_shift():
    logits, labels = _batch(seed=2)
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
    torch.testing.assert_close(
        CausalLMLoss(0.1)(logits, None, shift_labels=shifted), CausalLMLoss(0.1)(logits, labels)
    )
    unshifted = CausalLMLoss(0.1, shift=False)(logits, shifted)
    torch.testing.assert_close(unshifted, CausalLMLoss(0.1)(logits, labels))


def test_all_ignored_is_zero_and_errors_name_arguments():
    logits, labels = _batch()
    assert float(CausalLMLoss(0.1)(logits, torch.full_like(labels, -100))) == 0.0
    with pytest.raises(ValueError, match="labels"):
        CausalLMLoss(0.1)(logits, None)
    with pytest.raises(ValueError, match="ignore_index"):
        CausalLMLoss(0.1)(logits, labels, ignore_index=0)
    with pytest.raises(ValueError, match="alpha"):
        CausalLMLoss(1.5)
    expected = "CausalLMLoss(alpha=0.1, convention='uniform', ignore_index=-100, shift=True)"
    assert repr(CausalLMLoss(0.1)) == expected


# ---------------------------------------------------------------- with a tiny model


def _model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=VOCAB,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: micro-batching draws no randomness
    )
    return transformers.GPT2LMHeadModel(config)


def test_model_loss_function_hook():
    model = _model()
    assert hasattr(model, "loss_function")
    _, labels = _batch(seed=3, length=8)
    input_ids = labels.clamp(min=0)
    logits = model(input_ids).logits
    model.loss_function = CausalLMLoss(0.1)
    loss = model(input_ids, labels=labels).loss
    torch.testing.assert_close(loss, _reference(logits.detach(), labels, 0.1).float())


class _Sequences(torch.utils.data.Dataset):
    """8 sequences of 8 tokens whose padding (label -100) differs a lot from one to the next."""

    def __init__(self):
        gen = torch.Generator().manual_seed(5)
        self.ids = torch.randint(0, VOCAB, (8, 8), generator=gen)
        self.labels = self.ids.clone()
        for row, keep in enumerate([8, 2, 7, 3, 8, 4, 6, 2]):
            self.labels[row, keep:] = -100

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _train(tmp_path, *, batch_size=2, accumulation=2, model_hook=None, **kwargs):
    fields = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    extra = {"train_sampling_strategy": "sequential"} if "train_sampling_strategy" in fields else {}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=2, learning_rate=0.05, optim="sgd",
        report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, logging_steps=1,
        **extra, **kwargs.pop("args", {}),
    )
    model = _model()
    if model_hook is not None:
        model.loss_function = model_hook
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Sequences(), **kwargs)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach(), losses


def _micro_batch_mean(outputs, labels, num_items_in_batch=None):
    """What gradient accumulation did before num_items_in_batch: each micro-batch's own mean, averaged."""
    return CausalLMLoss(0.1)(outputs, labels) / 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Parameters and logged losses after two accumulated steps, for each way of smoothing."""
    run = {
        "label_smoothing_factor": {"args": {"label_smoothing_factor": 0.1}},
        "compute_loss_func": {"compute_loss_func": CausalLMLoss(0.1)},
        "model_loss_function": {"model_hook": CausalLMLoss(0.1)},
        "one_large_batch": {"compute_loss_func": CausalLMLoss(0.1), "batch_size": 4, "accumulation": 1},
        "unsmoothed": {},
        "micro_batch_means": {"compute_loss_func": _micro_batch_mean},
    }
    return {name: _train(tmp_path_factory.mktemp(name), **kwargs) for name, kwargs in run.items()}


@pytest.mark.parametrize("name", ["compute_loss_func", "model_loss_function", "one_large_batch"])
def test_trainer_matches_label_smoothing_factor(trained, name):
    params, losses = trained[name]
    ref_params, ref_losses = trained["label_smoothing_factor"]
    torch.testing.assert_close(params, ref_params, atol=1e-6, rtol=1e-5)
    assert losses == pytest.approx(ref_losses, rel=1e-5)


@pytest.mark.parametrize("name", ["unsmoothed", "micro_batch_means"])
def test_other_losses_train_differently(trained, name):
    """Both comparisons above can fail: no smoothing, or per-micro-batch means, end elsewhere."""
    assert not torch.allclose(trained[name][0], trained["one_large_batch"][0], atol=1e-5)


def test_example_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["transformers_label_smoothing.py", "--steps", "2"])
    runpy.run_path(str(EXAMPLES / "transformers_label_smoothing.py"), run_name="__main__")
    out = capsys.readouterr().out
    gaps = re.findall(r"max \|(\S+) - label_smoothing_factor\| over parameters: (\S+)", out)
    assert [name for name, _ in gaps] == ["compute_loss_func", "model.loss_function"], out
    assert all(float(gap) < 1e-5 for _, gap in gaps)

"""Token-level run records: per-token statistics give the metrics of the full logits, on a tiny GPT-2.

The oracle is the full-logit computation: F.cross_entropy and labelsmooth.metrics on the softmax of every
token's logits (those metrics are tested against torchmetrics, netcal and relplot in test_metrics.py).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the model is built from a config

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from labelsmooth import metrics  # noqa: E402
from labelsmooth.experiments import compare_runs, read_run, save_run  # noqa: E402
from labelsmooth.experiments._tokens import from_statistics  # noqa: E402
from labelsmooth.integrations.transformers import save_run as hf_save_run  # noqa: E402

VOCAB, LENGTH, SEQUENCES = 48, 12, 10


class Tokens(torch.utils.data.Dataset):
    """Fixed-length sequences with labels = input ids, some of them -100 (a prompt left out)."""

    def __init__(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (SEQUENCES, LENGTH), generator=gen)
        self.labels = self.ids.clone()
        self.labels[::3, :4] = -100

    def __len__(self) -> int:
        return SEQUENCES

    def __getitem__(self, k):
        return {"input_ids": self.ids[k], "labels": self.labels[k]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2)
    net = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # sharper than at initialization: confidences 0.1 to 0.4, over several ECE bins
        net.lm_head.weight.mul_(10.0)
    return net


def _trainer(model, tmp_path):
    args = transformers.TrainingArguments(str(tmp_path / "hf"), per_device_eval_batch_size=4, report_to=[],
                                          use_cpu=True)
    return transformers.Trainer(model=model, args=args)


def _full(model, data):
    """Every scored token's logits (M, V) in float64 and labels, shifted as the model shifts."""
    with torch.no_grad():
        logits = model(input_ids=data.ids).logits[:, :-1].double()
    labels = data.labels[:, 1:]
    keep = labels != -100
    return logits[keep], labels[keep]


def _reference(logits, labels, temperature=1.0):
    probs = torch.softmax(logits / temperature, dim=1)
    return {
        "accuracy": float((probs.argmax(1) == labels).double().mean()),
        "nll": float(F.cross_entropy(logits / temperature, labels)),
        "ece": metrics.expected_calibration_error(probs, labels, n_bins=15),
        "smooth_ece": metrics.smooth_ece(probs, labels),
        "adaptive_ece": metrics.adaptive_ece(probs, labels),
        "brier": metrics.brier_score(probs, labels),
        "aurc": metrics.aurc(probs, labels),
    }


def _assert_metrics(ours, reference):
    assert ours["accuracy"] == reference["accuracy"]
    assert ours["nll"] == pytest.approx(reference["nll"], rel=1e-5)
    for name in ("ece", "smooth_ece", "adaptive_ece", "aurc"):
        assert ours[name] == pytest.approx(reference[name], abs=1e-4), name
    assert ours["brier"] == pytest.approx(reference["brier"], rel=1e-5)


@pytest.fixture(scope="module")
def records(model, tmp_path_factory):
    """hf save_run's records at two alphas (the same model: the analysis, not training, is tested)."""
    folder = tmp_path_factory.mktemp("tokens")
    trainer = _trainer(model, folder)
    for alpha in (0.0, 0.1):
        hf_save_run(trainer, folder / f"a{alpha}.npz", alpha=alpha, seed=0, test_dataset=Tokens(1),
                    val_dataset=Tokens(2), settings={"model": "gpt2-tiny"})
    return folder


def test_token_statistics_equal_the_full_logits_at_each_temperature(model):
    logits, labels = _full(model, Tokens(1))
    stats = metrics.token_statistics(logits[None], labels[None])
    for column in (0, 6, 10):
        t = float(stats.temperatures[column])
        probs = torch.softmax(logits / t, dim=1)
        nll = F.cross_entropy(logits / t, labels, reduction="none")
        np.testing.assert_allclose(stats.nll[:, column], nll, rtol=1e-6)
        np.testing.assert_allclose(stats.confidence[:, column], probs.max(1).values, rtol=1e-6)
        brier = (probs - F.one_hot(labels, VOCAB)).square().sum(1)
        np.testing.assert_allclose(stats.brier[:, column], brier, rtol=1e-5, atol=1e-7)
    assert stats.correct.tolist() == (logits.argmax(1) == labels).tolist()
    assert stats.temperatures[6] == 1.0
    per_token = sum(t.element_size() * t[0].numel() for t in (stats.correct, stats.nll, stats.confidence,
                                                              stats.brier, stats.labels, stats.index))
    assert per_token + 2 * 8 < 300  # with the record's sequence id and position


def test_ignored_tokens_are_dropped_and_the_class_dim_can_move():
    gen = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(2, 5, 7, generator=gen), torch.randint(0, 7, (2, 5), generator=gen)
    labels[1, 2:] = -100
    kept = metrics.token_statistics(logits, labels)
    moved = metrics.token_statistics(logits.movedim(-1, 1), labels, dim=1)
    dropped = metrics.token_statistics(logits.reshape(-1, 7)[labels.reshape(-1) != -100][None],
                                       labels.reshape(-1)[labels.reshape(-1) != -100][None])
    assert kept.index.tolist() == [0, 1, 2, 3, 4, 5, 6]
    for a, b in ((kept, moved), (kept, dropped)):
        torch.testing.assert_close(a.nll, b.nll, rtol=0, atol=0)
        torch.testing.assert_close(a.brier, b.brier, rtol=0, atol=0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"logits": torch.zeros(2, 3, dtype=torch.long)}, "logits: expected a floating-point"),
    ({"labels": torch.zeros(2, dtype=torch.float32)}, "labels: expected an integer"),
    ({"labels": torch.zeros(3, dtype=torch.long)}, r"labels: expected shape \(2,\)"),
    ({"labels": torch.tensor([0, 9])}, r"labels: expected class indices in \[0, 3\)"),
    ({"temperatures": [0.5, 2.0]}, "temperatures: expected increasing positive temperatures that include 1"),
    ({"logits": torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]])}, "logits: expected finite values"),
], ids=["int-logits", "float-labels", "shape", "range", "grid", "nan"])
def test_bad_input_is_named(kwargs, match):
    args = {"logits": torch.zeros(2, 3), "labels": torch.tensor([0, 1])} | kwargs
    with pytest.raises((TypeError, ValueError), match=match):
        metrics.token_statistics(args.pop("logits"), args.pop("labels"), **args)


def test_hf_record_equals_save_run_from_the_same_logits(model, records, tmp_path):
    test = Tokens(1)
    logits, labels = _full(model, test)
    stats = metrics.token_statistics(logits[None], labels[None])
    rows, positions = np.nonzero((test.labels[:, 1:] != -100).numpy())
    split = from_statistics([(stats, rows, positions + 1)])
    reference = read_run(save_run(tmp_path / "ref.npz", alpha=0.0, seed=0, test=split,
                                  settings={"model": "gpt2-tiny"}))
    ours = read_run(records / "a0.0.npz")
    for name in ("ids", "examples", "labels", "correct"):
        np.testing.assert_array_equal(getattr(ours.test, name), getattr(reference.test, name))
    for name in ("nll", "confidence", "brier"):  # batches of 4 against one forward over 10 sequences
        np.testing.assert_allclose(getattr(ours.test, name), getattr(reference.test, name), rtol=1e-5,
                                   atol=1e-6)


def test_compare_runs_reports_per_token_metrics_of_the_full_logits(model, records, tmp_path):
    result = compare_runs(records, out=tmp_path / "report")
    logits, labels = _full(model, Tokens(1))
    run = result.runs[0]
    _assert_metrics(run.metrics, _reference(logits, labels))
    assert run.temperature is not None
    _assert_metrics(run.scaled, _reference(logits, labels, run.temperature))
    val_logits, val_labels = _full(model, Tokens(2))
    grid = read_run(records / "a0.0.npz").test.temperatures
    best = min(grid, key=lambda t: float(F.cross_entropy(val_logits / t, val_labels)))
    assert run.temperature == best  # the grid's validation-NLL minimizer
    document = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert document["task"] == "tokens" and document["unit"] == "tokens"
    assert document["absent_metrics"] == ["classwise_ece"]
    assert "classwise_ece" not in document["runs"][0]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "unit: tokens" in report and "classwise_ece" in report


def test_a_record_of_logits_and_tokens_is_refused(records, tmp_path):
    with np.load(records / "a0.0.npz") as stored:
        arrays = dict(stored)
    np.savez(tmp_path / "both.npz", test_logits=np.zeros((2, 3), np.float32), **arrays)
    with pytest.raises(ValueError, match="either logits or token statistics"):
        read_run(tmp_path / "both.npz")


def test_sequence_classifier_record_equals_save_run(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2,
                                     num_labels=3, pad_token_id=0)
    net = transformers.GPT2ForSequenceClassification(config).eval()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(1, VOCAB, (7, LENGTH), generator=gen)
    labels = torch.randint(0, 3, (7,), generator=gen)
    data = [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]
    path = hf_save_run(_trainer(net, tmp_path), tmp_path / "cls.npz", alpha=0.1, seed=1, test_dataset=data)
    with torch.no_grad():
        logits = net(input_ids=ids).logits
    reference = read_run(save_run(tmp_path / "ref.npz", alpha=0.1, seed=1, test=(logits, labels)))
    ours = read_run(path)
    np.testing.assert_array_equal(ours.test.ids, reference.test.ids)
    np.testing.assert_array_equal(ours.test.labels, reference.test.labels)
    np.testing.assert_allclose(ours.test.logits, reference.test.logits, rtol=1e-5, atol=1e-6)

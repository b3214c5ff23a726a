"""Early stopping as a baseline in ``compare``: each run also measured with its lowest-validation-NLL weights.

Oracles: a run whose weights per epoch are scripted (so the epoch of lowest
validation NLL is known in advance, found here by a float64 formula), metrics
recomputed here from those weights, the same run stopped at that epoch, and
records written with numpy alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

pytest.importorskip("matplotlib")

from labelsmooth.experiments import RunResult, compare, compare_runs, read_run, save_run
from labelsmooth.experiments._analysis import summarize
from labelsmooth.experiments._results import CompareResult, EarlyStopped
from labelsmooth.experiments.report import early_stopping_answer, report_markdown
from labelsmooth.experiments.train import Checkpoint, TrainConfig

pytestmark = pytest.mark.usefixtures("quick_figures")

CLASSES, DIM = 3, 2
#: The template the scripted weights scale: logits are ``scale * x @ TEMPLATE.T``.
TEMPLATE = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
#: One weight scale per epoch: too soft, about right, then ever more over-confident on noisy labels.
SCALES = (0.05, 0.6, 4.0, 30.0)
#: The epoch (from 1) whose weights have the lowest validation NLL (checked against the formula below).
KNOWN_BEST = 2


def noisy_blobs(n: int, seed: int, flip: float = 0.2) -> TensorDataset:
    """Three overlapping blobs around the template's directions, ``flip`` of the labels moved at random."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    inputs = TEMPLATE[labels] / 2 + 0.8 * torch.randn(n, DIM, generator=generator)
    moved = torch.rand(n, generator=generator) < flip
    labels = torch.where(moved, (labels + 1 + (torch.rand(n, generator=generator) < 0.5).long()) % CLASSES,
                         labels)
    return TensorDataset(inputs, labels)


TRAIN, VAL, TEST = noisy_blobs(60, seed=1), noisy_blobs(300, seed=2), noisy_blobs(300, seed=3)


class Scripted(torch.optim.Optimizer):
    """Ignores the gradient: its k-th step sets the weight to ``SCALES[k] * TEMPLATE`` and the bias to 0."""

    def __init__(self, params) -> None:
        super().__init__(params, {})
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        weight, bias = self.param_groups[0]["params"]
        weight.copy_(SCALES[self.steps] * TEMPLATE)
        bias.zero_()
        self.steps += 1


def linear(num_classes: int) -> nn.Module:
    return nn.Linear(DIM, num_classes)


def scripted_run(epochs: int) -> RunResult:
    """One run of the scripted model (one step per epoch: a batch holds the whole training split)."""
    result = compare(model=linear, train=TRAIN, val=VAL, test=TEST, alphas=[0.0], seeds=1, ci=False,
                     epochs=epochs, batch_size=len(TRAIN), optimizer=Scripted)
    return result.runs[0]


def float64_nll(scale: float, data: TensorDataset) -> float:
    inputs, labels = data.tensors
    logits = scale * inputs.double() @ TEMPLATE.double().T
    return float(-torch.log_softmax(logits, 1)[torch.arange(len(labels)), labels].mean())


def test_the_constructed_run_has_its_lowest_validation_nll_at_the_known_epoch():
    """The premise of the next test, from the formula alone."""
    losses = [float64_nll(scale, VAL) for scale in SCALES]
    assert int(np.argmin(losses)) + 1 == KNOWN_BEST


@pytest.fixture(scope="module")
def stopped() -> RunResult:
    return scripted_run(epochs=len(SCALES))


def test_best_epoch_is_the_epoch_of_lowest_validation_nll(stopped):
    assert stopped.early_stopped is not None and stopped.early_stopped.epoch == KNOWN_BEST
    assert stopped.value("best_epoch") == KNOWN_BEST


def test_the_early_stopped_metrics_are_those_of_that_epochs_weights(stopped):
    inputs, labels = TEST.tensors
    logits = SCALES[KNOWN_BEST - 1] * inputs.double() @ TEMPLATE.double().T
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(labels, CLASSES).double()
    expected = {"accuracy": float((logits.argmax(1) == labels).double().mean()),
                "nll": float(F.cross_entropy(logits, labels)),
                "brier": float((probs - onehot).square().sum(1).mean())}
    for name, value in expected.items():
        assert stopped.early_stopped.metrics[name] == pytest.approx(value, rel=1e-5), name
    # The final weights are another model: the early-stopped numbers are not the final ones.
    assert stopped.metrics["nll"] > stopped.early_stopped.metrics["nll"] + 0.1


def test_the_early_stopped_run_equals_the_run_stopped_there(stopped):
    """Every metric, raw and temperature-scaled, and the temperature: as a run of KNOWN_BEST epochs."""
    short = scripted_run(epochs=KNOWN_BEST)
    es = stopped.early_stopped
    assert es.metrics == pytest.approx(short.metrics, rel=1e-6)
    assert es.scaled == pytest.approx(short.scaled, rel=1e-6)
    assert es.temperature == pytest.approx(short.temperature, rel=1e-6)
    assert es.temperature_ok == short.temperature_ok


def test_with_one_epoch_the_early_stopped_metrics_are_the_final_ones(tmp_path):
    train = noisy_blobs(90, seed=4, flip=0.0)
    result = compare(model=linear, train=train, val=VAL, test=TEST, alphas=[0.0, 0.1], seeds=1, ci=False,
                     epochs=1, batch_size=16, lr=0.05, out=tmp_path / "out")
    for run in result.runs:
        assert run.early_stopped.epoch == 1
        assert run.early_stopped.metrics == run.metrics and run.early_stopped.scaled == run.scaled
        assert run.early_stopped.temperature == run.temperature
    for path in (tmp_path / "out" / "predictions").iterdir():
        stored = np.load(path)
        np.testing.assert_array_equal(stored["test_es_logits"], stored["test_logits"])
        np.testing.assert_array_equal(stored["val_es_logits"], stored["val_logits"])
        assert json.loads(str(stored["meta"]))["best_epoch"] == 1


def test_without_a_validation_split_there_is_no_early_stopping(tmp_path):
    result = compare(model=linear, train=noisy_blobs(90, seed=4), test=TEST, val_fraction=0.0,
                     alphas=[0.0, 0.1], seeds=1, ci=False, epochs=2, batch_size=16, lr=0.05,
                     out=tmp_path / "out")
    assert all(run.early_stopped is None for run in result.runs)
    assert all(row["accuracy_es_mean"] is None and row["n_es"] == 0 for row in result.summary)
    assert {c["checkpoint"] for c in result.comparisons} == {"final"}
    assert "No early stopping: there is no validation split" in early_stopping_answer(result)[0]
    assert "No early stopping: there is no validation split" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["runs"][0]["best_epoch"] is None


def test_the_checkpoint_copies_weights_to_the_cpu_only_when_the_validation_nll_improves():
    model = nn.Linear(2, 3)
    first = Checkpoint.better(None, model, 1, 0.9)
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on: the kept copy must not follow
    assert first is not None and first.epoch == 1
    assert not torch.equal(first.state["weight"], model.weight)
    assert Checkpoint.better(first, model, 2, 0.9) is first  # a tie keeps the earlier epoch
    assert Checkpoint.better(first, model, 2, float("nan")) is first
    assert Checkpoint.better(first, model, 2, None) is first
    second = Checkpoint.better(first, model, 3, 0.5)
    assert second.epoch == 3 and torch.equal(second.state["weight"], model.weight)
    assert all(t.device.type == "cpu" for t in second.state.values())


# Records from other trainers: the early-stopped logits are optional keys.

N = 300


def logits_for(labels: np.ndarray, boost: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(labels), CLASSES))
    logits[np.arange(len(labels)), labels] += boost
    return logits.astype(np.float32)


def numpy_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


#: (alpha, seed) -> (final boost, early-stopped boost): the baseline gains from stopping, alpha 0.1 less so.
BOOSTS = {(0.0, 0): (0.5, 1.5), (0.0, 1): (0.6, 1.4), (0.1, 0): (1.2, 1.3), (0.1, 1): (1.1, 1.4)}


def write_records(folder, *, early_stopped: bool) -> dict:
    rng = np.random.default_rng(0)
    test_labels, val_labels = rng.integers(0, CLASSES, N), rng.integers(0, CLASSES, N)
    arrays = {}
    for k, ((alpha, seed), (final, stopped)) in enumerate(BOOSTS.items()):
        record = {"test_logits": logits_for(test_labels, final, 10 * k),
                  "val_logits": logits_for(val_labels, final, 10 * k + 1),
                  "test_labels": test_labels, "val_labels": val_labels}
        meta = {"alpha": alpha, "seed": seed}
        if early_stopped:
            record |= {"test_es_logits": logits_for(test_labels, stopped, 10 * k + 2),
                       "val_es_logits": logits_for(val_labels, stopped, 10 * k + 3)}
            meta["best_epoch"] = 3 + k
        np.savez(folder / f"a{alpha}_s{seed}.npz", **record, meta=json.dumps(meta))
        arrays[alpha, seed] = record
    return arrays


def test_records_with_early_stopped_logits_through_compare_runs(tmp_path):
    arrays = write_records(tmp_path, early_stopped=True)
    result = compare_runs(tmp_path, out=tmp_path / "report")
    for run in result.runs:
        record = arrays[run.alpha, run.seed]
        assert run.early_stopped.metrics["nll"] == pytest.approx(
            numpy_nll(record["test_es_logits"], record["test_labels"]), rel=1e-9)
        assert run.metrics["nll"] == pytest.approx(numpy_nll(record["test_logits"], record["test_labels"]),
                                                   rel=1e-9)
    by_run = sorted(result.runs, key=lambda r: (r.alpha, r.seed))
    assert [r.early_stopped.epoch for r in by_run] == [3, 4, 5, 6]
    nll = {key: {name: numpy_nll(record[f"test{name}_logits"], record["test_labels"]) for name in ("", "_es")}
           for key, record in arrays.items()}
    expected = {("early_stopped", "early_stopped"): [nll[0.1, s]["_es"] - nll[0.0, s]["_es"] for s in (0, 1)],
                ("final", "early_stopped"): [nll[0.1, s][""] - nll[0.0, s]["_es"] for s in (0, 1)],
                ("final", "final"): [nll[0.1, s][""] - nll[0.0, s][""] for s in (0, 1)]}
    for (mine, theirs), differences in expected.items():
        c = next(c for c in result.comparisons if c["metric"] == "nll" and c["scaling"] == "none"
                 and c["alpha_checkpoint"] == mine and c["checkpoint"] == theirs)
        assert c["difference_mean"] == pytest.approx(np.mean(differences), rel=1e-9)
    row = result.summary[0]
    assert row["nll_es_mean"] == pytest.approx(np.mean([nll[0.0, s]["_es"] for s in (0, 1)]), rel=1e-9)
    assert row["best_epoch_mean"] == 3.5 and row["n_es"] == 2
    report = (tmp_path / "report" / "report.md").read_text()
    assert "**NLL against early stopping**: alpha 0.1 at its final epoch" in report


def test_records_without_early_stopped_logits_say_so(tmp_path):
    write_records(tmp_path, early_stopped=False)
    result = compare_runs(tmp_path)
    assert all(run.early_stopped is None for run in result.runs)
    assert {c["checkpoint"] for c in result.comparisons} == {"final"}
    assert "No early stopping: no run has early-stopped predictions" in early_stopping_answer(result)[0]


def test_a_record_written_by_save_run_keeps_its_early_stopped_logits(tmp_path):
    labels = np.arange(12) % CLASSES
    test, stopped = logits_for(labels, 1.0, 0), logits_for(labels, 2.0, 1)
    path = save_run(tmp_path / "run.npz", alpha=0.1, seed=0, test=(torch.from_numpy(test), labels),
                    best_epoch=4, test_es_logits=torch.from_numpy(stopped))
    record = read_run(path)
    assert record.best_epoch == 4
    np.testing.assert_array_equal(record.test.es_logits, stopped)
    np.testing.assert_array_equal(record.test.logits, test)


def test_early_stopped_logits_follow_their_rows_when_ids_are_shuffled(tmp_path):
    labels = np.arange(30) % CLASSES
    test, stopped = logits_for(labels, 1.0, 0), logits_for(labels, 2.0, 1)
    order = np.random.default_rng(3).permutation(30)
    for name, rows in (("sorted", np.arange(30)), ("shuffled", order)):
        np.savez(tmp_path / f"{name}.npz", test_logits=test[rows], test_labels=labels[rows], test_ids=rows,
                 test_es_logits=stopped[rows], meta=json.dumps({"alpha": 0.0, "seed": 0, "best_epoch": 2}))
    from labelsmooth.experiments._records import sorted_by_id

    a, b = (sorted_by_id(read_run(tmp_path / f"{name}.npz")) for name in ("sorted", "shuffled"))
    np.testing.assert_array_equal(a.test.es_logits, b.test.es_logits)
    np.testing.assert_array_equal(b.test.es_logits, stopped)


@pytest.mark.parametrize(("change", "message"), [
    ({"val_logits": np.zeros((4, CLASSES), np.float32), "val_labels": np.arange(4) % CLASSES,
      "val_es_logits": np.zeros((4, CLASSES), np.float32)}, r"test_es_logits: expected an array beside "
                                                            r"val_es_logits"),
    ({"test_es_logits": np.zeros((5, CLASSES), np.float32)}, r"test_es_logits: expected shape \(4, 3\)"),
    ({"test_es_logits": np.full((4, CLASSES), np.nan, np.float32)}, r"test_es_logits: expected finite"),
    ({"meta": {"alpha": 0.0, "seed": 0, "best_epoch": 2}}, r"test_es_logits: expected an array beside "
                                                           r"meta.best_epoch"),
    ({"meta": {"alpha": 0.0, "seed": 0, "best_epoch": 0}, "test_es_logits": np.zeros((4, 3), np.float32)},
     r"meta.best_epoch: expected an epoch >= 1, got 0"),
    ({"test_es_logits": np.zeros((4, CLASSES), np.float32), "val_es_logits": np.zeros((4, 3), np.float32)},
     r"val_es_logits: expected val_logits and val_labels beside it"),
], ids=["val-without-test", "wrong-shape", "not-finite", "epoch-without-logits", "epoch-zero",
        "no-val-split"])
def test_bad_early_stopping_keys_are_refused_naming_the_key(tmp_path, change, message):
    arrays = {"test_logits": np.zeros((4, CLASSES), np.float32), "test_labels": np.arange(4) % CLASSES,
              "meta": {"alpha": 0.0, "seed": 0}} | change
    np.savez(tmp_path / "r.npz", **{k: json.dumps(v) if k == "meta" else v for k, v in arrays.items()})
    with pytest.raises(ValueError, match=message):
        read_run(tmp_path / "r.npz")


# The report's answer, from constructed numbers.


def constructed(final: float, stopped: float) -> CompareResult:
    """Alpha 0.1 at its final epoch with accuracy ``final`` (+-0.01 by seed) against alpha 0 early-stopped
    at ``stopped``; every other value 0.5."""
    from labelsmooth.experiments.evaluate import metric_names
    from labelsmooth.metrics import reliability_bins

    bins = reliability_bins(torch.full((2, 3), 1 / 3), torch.tensor([0, 1]), n_bins=15)
    names = metric_names("classification")
    runs = []
    for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        for alpha, accuracy in ((0.0, 0.5), (0.1, final + jitter)):
            es = EarlyStopped(5 + seed, {**dict.fromkeys(names, 0.5), "accuracy": stopped + jitter}
                              if alpha == 0.0 else dict.fromkeys(names, 0.5))
            runs.append(RunResult(alpha, seed, {**dict.fromkeys(names, 0.5), "accuracy": accuracy}, bins,
                                  early_stopped=es))
    result = CompareResult("made", "classification", 3, ("a", "b", "c"), [0.0, 0.1], [0, 1, 2],
                           TrainConfig(20, 1, 1.0), runs)
    summarize(result)
    return result


@pytest.mark.parametrize(("final", "stopped", "conclusion", "difference"), [
    (0.8, 0.7, "So on accuracy smoothing beats early stopping.", "+10 ± 0 points"),
    (0.7, 0.8, "So on accuracy early stopping beats smoothing.", "-10 ± 0 points"),
], ids=["smoothing-wins", "early-stopping-wins"])
def test_the_answer_says_which_wins_from_the_numbers(final, stopped, conclusion, difference):
    result = constructed(final, stopped)
    sentence = early_stopping_answer(result)[0]
    assert sentence.startswith("- **Accuracy against early stopping**: alpha 0.1 at its final epoch")
    assert "alpha 0 early-stopped (at epoch 6.0 ± 2.5 of 20)" in sentence
    assert difference in sentence and sentence.endswith(conclusion)
    assert sentence in report_markdown(result)

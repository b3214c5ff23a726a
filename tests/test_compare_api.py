"""``compare`` with the user's own model and data: history, the did-not-learn flag, the penultimate hook,
executors, the run store and resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import compare_helpers as helpers
from labelsmooth.experiments import DataError, Progress, compare
from labelsmooth.experiments._geometry import template_plane_projection
from labelsmooth.experiments.data import from_datasets, generate_shapes
from labelsmooth.experiments.evaluate import predict
from labelsmooth.experiments.models import last_layer
from labelsmooth.experiments.stats import NOT_COMPARABLE

pytestmark = pytest.mark.usefixtures("quick_figures")

HELPERS = Path(helpers.__file__).parent


def user_compare(**kwargs):
    return compare(**{**helpers.options(), **kwargs})


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    out = tmp_path_factory.mktemp("user") / "out"
    return user_compare(out=out), out


def test_user_model_and_data_end_to_end(classification):
    _, out = classification
    document = json.loads((out / "metrics.json").read_text())
    assert document["task"] == "classification" and document["num_classes"] == 3
    assert document["config"]["model"] == "compare_helpers.make_model"
    assert [(r["alpha"], r["seed"]) for r in document["runs"]] == [(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)]
    for run in document["runs"]:
        assert run["learned"] is True
        assert [e["epoch"] for e in run["history"]] == [1, 2, 3]
        assert all(e["val_loss"] is not None and 0 <= e["val_accuracy"] <= 1 for e in run["history"])
        assert run["history"][-1]["train_loss"] < run["history"][0]["train_loss"]
        assert run["accuracy"] > 0.9
    assert {c["verdict"] for c in document["comparisons"]} <= {"better", "worse", "inside the noise"}
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_history_is_the_training_that_happened(classification):
    """The first epoch's validation accuracy of a fresh model is the one a replayed first epoch gives."""
    result, _ = classification
    again = user_compare(epochs=1, seeds=1, ci=False, alphas=[0.0])
    assert again.runs[0].history[0] == result.runs[0].history[0]


def test_seed_fixes_the_initialization_for_every_alpha(monkeypatch):
    built = []

    def recording(num_classes):
        model = helpers.make_model(num_classes)
        built.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return model

    user_compare(model=recording, alphas=[0.0, 0.1, 0.2], seeds=1, ci=False, epochs=1)
    # built[0] is the probe (seed 0); then alphas 0, 0.1, 0.2 at seed 0.
    assert len(built) == 4 and all(torch.equal(built[1], b) for b in built[2:])


def test_penultimate_is_the_input_of_the_last_linear():
    data = from_datasets(helpers.blobs(30, seed=1), helpers.blobs(20, seed=2))
    model = helpers.make_model(3)
    layer, note = last_layer(model, 3)
    assert (layer, note) == ("classifier", "")
    _, _, features = predict(model, data.test, torch.device("cpu"), layer)
    with torch.no_grad():
        expected = model.trunk(data.test.inputs)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_penultimate_picture_skipped_with_a_note_or_named():
    common = {"model": helpers.WithProbe, "seeds": 1, "ci": False, "epochs": 1, "alphas": [0.0]}
    skipped = user_compare(**common)
    assert skipped.runs[0].projection is None
    assert any("'probe', has 2 outputs, not 3" in note for note in skipped.notes)
    named = user_compare(**common, penultimate="classifier")
    assert named.runs[0].projection is not None and named.runs[0].projection_classes == (0, 1, 2)
    expected_rows = sum(min(20, 300) for _ in range(3))  # every test item of the three classes
    assert named.runs[0].projection.shape == (expected_rows, 2)


def test_projection_matches_the_template_plane_of_the_trained_classifier():
    """Recompute the picture from a model trained the same way (same seed): same coordinates."""
    train, test = helpers.blobs(90, seed=1), helpers.blobs(60, seed=2)
    result = compare(model=helpers.make_model, train=train, test=test, val_fraction=0.0, seeds=1, ci=False,
                     epochs=1, alphas=[0.0], batch_size=16, lr=0.01)
    from labelsmooth.experiments._compare import _train_config
    from labelsmooth.experiments._config import CompareConfig
    from labelsmooth.experiments.data import prepare
    from labelsmooth.experiments.train import deterministic
    from labelsmooth.experiments.train import train as train_model

    data = prepare(from_datasets(train, test, val_fraction=0.0))
    config = _train_config(data, CompareConfig(epochs=1, batch_size=16, lr=0.01))
    with deterministic(threads=1):
        model, _, _ = train_model(data, helpers.make_model, 0.0, 0, config)
    with torch.no_grad():
        features = model.trunk(test.tensors[0]).double()
    labels = test.tensors[1]
    expected = template_plane_projection(features, model.classifier.weight.detach().double(), (0, 1, 2))
    order = torch.cat([torch.nonzero(labels == k).flatten() for k in (0, 1, 2)])
    torch.testing.assert_close(torch.from_numpy(result.runs[0].projection), expected[order])


def test_segmentation_with_a_user_model(tmp_path):
    x_train, y_train = generate_shapes(24, size=16, seed=5)
    x_test, y_test = generate_shapes(8, size=16, seed=6)
    result = compare(model=helpers.make_segnet, train=TensorDataset(torch.from_numpy(x_train),
                                                                     torch.from_numpy(y_train)),
                     test=TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test)), ignore_index=255,
                     seeds=2, epochs=2, batch_size=8, out=tmp_path / "out")
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["task"] == "segmentation" and document["num_classes"] == 4
    assert document["config"]["loss"] == "dice+cross_entropy" and document["config"]["penultimate"] == "head"
    assert all("miou" in run and len(run["history"]) == 2 for run in document["runs"])
    assert result.runs[0].projection_classes == (1, 2, 3)


def test_constant_model_did_not_learn_and_gets_no_verdict(tmp_path):
    result = user_compare(model=helpers.Constant, out=tmp_path / "out")
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all(run["learned"] is False for run in document["runs"])
    assert all("not above the majority-class rate" in run["learned_check"]["reasons"][0]
               for run in document["runs"])
    assert {c["verdict"] for c in document["comparisons"]} == {NOT_COMPARABLE}
    assert all(c["inside_noise"] is None for c in document["comparisons"])
    report = (tmp_path / "out" / "report.md").read_text()
    # The verdicts first (each not comparable), then the warning, then the provenance.
    verdicts = report.index("- **Accuracy**: ")
    warning = report.index("> **Warning: 4 of 4 runs did not learn")
    assert verdicts < warning < report.index("## Provenance")
    # No alpha is named best when its runs did not learn (accuracy, NLL). A constant model's temperature
    # cannot be fitted: nothing after scaling is measured, so that headline has no verdict at all, and the
    # runs are named before the verdicts.
    assert report[verdicts:warning].count("no best alpha: every alpha measured has a run that did not") == 2
    assert "- **ECE after temperature scaling**: not measured" in report
    assert report.index("> **Temperature fits left out**: 4 of 4 runs") < verdicts
    assert "**Not comparable**" in report
    assert not result.runs[0].learned


def test_non_finite_loss_did_not_learn_and_json_says_null(tmp_path):
    user_compare(model=helpers.Diverging, out=tmp_path / "out")
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text
    run = json.loads(text)["runs"][0]
    assert run["learned"] is False and run["accuracy"] is None
    assert "the training loss became non-finite" in run["learned_check"]["reasons"]
    assert len(run["history"]) == 1  # training stops after the first non-finite epoch


def test_one_run_that_did_not_learn_blocks_the_verdict():
    result = user_compare(model=helpers.make_model, seeds=2)
    result.runs[0].check = {**result.runs[0].check, "learned": False, "reasons": ["forced"]}
    from labelsmooth.experiments._analysis import summarize

    summarize(result)
    assert {c["verdict"] for c in result.comparisons} == {NOT_COMPARABLE}


@pytest.mark.slow  # two spawned workers each import torch and the library
def test_two_jobs_are_bit_identical_to_one():
    one = user_compare(seeds=2)
    two = user_compare(seeds=2, jobs=2)
    assert json.dumps(two.to_dict()) == json.dumps(one.to_dict())


def test_progress_reports_every_step_and_run():
    seen: list[Progress] = []
    user_compare(seeds=2, progress=seen.append)
    finished = [p for p in seen if p.finished is not None]
    assert [p.runs_done for p in finished] == [1, 2, 3, 4]
    assert finished[-1].eta == 0.0 and all(p.runs_total == 4 for p in seen)
    steps = [p.steps_done for p in seen if p.finished is None]
    assert steps == list(range(1, seen[0].steps_total + 1))


@pytest.mark.slow
def test_worker_processes_report_runs_not_steps():
    seen: list[Progress] = []
    user_compare(seeds=2, jobs=2, progress=seen.append)
    assert [p.runs_done for p in seen] == [1, 2, 3, 4] and all(p.steps_total == 0 for p in seen)


def test_runs_are_appended_as_they_finish(tmp_path):
    lines = []

    def look(progress):
        if progress.finished is not None:
            lines.append(len((tmp_path / "out" / "runs.jsonl").read_text().splitlines()))

    user_compare(out=tmp_path / "out", progress=look)
    assert lines == [2, 3, 4, 5]  # the settings line, then one line per run, before the callback hears of it


@pytest.mark.slow  # a subprocess, killed partway
def test_resume_after_a_kill_gives_the_same_metrics(tmp_path):
    out = tmp_path / "out"
    code = "import sys, compare_helpers; compare_helpers.run_for_resume(sys.argv[1], float(sys.argv[2]))"
    process = subprocess.Popen([sys.executable, "-c", code, str(out), "0.05"], cwd=HELPERS)
    store = out / "runs.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if store.exists() and len(store.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the comparison ended before it could be killed"
    process.kill()
    process.wait(timeout=30)
    kept = store.read_bytes().count(b"\n") - 1  # complete run lines (a line cut by the kill is dropped)
    assert 2 <= kept < 6, "the kill should land partway"
    seen: list[Progress] = []
    resumed = user_compare(seeds=3, out=out, resume=True, progress=seen.append)
    assert max(p.runs_done for p in seen) == 6 - kept
    uninterrupted = user_compare(seeds=3, out=tmp_path / "whole")
    assert (out / "metrics.json").read_text() == (tmp_path / "whole" / "metrics.json").read_text()
    assert resumed.to_dict() == uninterrupted.to_dict()


def interrupt_after(runs: int):
    """A progress callback that acts like Ctrl-C once ``runs`` runs have finished (at the next step)."""
    def progress(p: Progress) -> None:
        if p.runs_done >= runs:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("finished", [0, 2], ids=["in-the-first-run", "after-two-runs"])
def test_ctrl_c_writes_a_partial_report_of_the_finished_runs(tmp_path, finished):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        user_compare(out=out, progress=interrupt_after(finished))
    document = json.loads((out / "metrics.json").read_text())
    assert document["partial"] is True and len(document["runs"]) == finished
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1 + finished
    assert "> **Partial report**: interrupted after" in (out / "report.md").read_text()
    user_compare(out=out, resume=True)
    user_compare(out=tmp_path / "whole")
    assert (out / "metrics.json").read_text() == (tmp_path / "whole" / "metrics.json").read_text()


def test_resume_refuses_other_settings(tmp_path):
    user_compare(out=tmp_path / "out", seeds=1, ci=False)
    with pytest.raises(ValueError, match=r"out: expected the settings of the runs in .*epochs 3 -> 4"):
        user_compare(out=tmp_path / "out", seeds=1, ci=False, epochs=4, resume=True)


def test_resume_with_more_seeds_reuses_the_finished_runs(tmp_path):
    user_compare(out=tmp_path / "out", seeds=1, ci=False)
    seen: list[Progress] = []
    result = user_compare(out=tmp_path / "out", seeds=2, resume=True, progress=seen.append)
    assert max(p.runs_done for p in seen) == 2 and len(result.runs) == 4


def test_a_cut_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "out"
    user_compare(out=out, seeds=2)
    store = out / "runs.jsonl"
    lines = store.read_text().splitlines(keepends=True)
    store.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    seen: list[Progress] = []
    user_compare(out=out, seeds=2, resume=True, progress=seen.append)
    assert max(p.runs_done for p in seen) == 1
    assert all(json.loads(line) for line in store.read_text().splitlines())


def test_out_with_results_is_refused_unless_resume_or_overwrite(tmp_path):
    out = tmp_path / "out"
    user_compare(out=out, seeds=1, ci=False)
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(ValueError, match="out: expected an empty or new folder"):
        user_compare(out=out, seeds=1, ci=False)
    assert (out / "metrics.json").read_bytes() == before
    user_compare(out=out, seeds=1, ci=False, alphas=[0.0], overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["alphas"] == [0.0]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


class NotAPair(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.zeros(3)


BAD = {
    "mps": ({"device": "mps"}, "device: expected an available device"),
    "xpu": ({"device": "xpu"}, "device: expected an available device"),
    "meta": ({"device": "meta"}, "device: expected a device that holds data"),
    "cuda-absent": ({"device": "cuda:7"}, "device: expected an available device"),
    "not-a-device": ({"device": "tpu9"}, "device: expected a torch device"),
    "factory-returns-int": ({"model": helpers.not_a_factory}, r"model: expected a callable\(num_classes\)"),
    "model-instance": ({"model": nn.Linear(6, 3)}, r"model: expected .*a factory, not a model"),
    "wrong-output-shape": ({"model": lambda c: nn.Linear(helpers.DIM, 5)},
                           r"model: expected logits of shape \(2, 3\) for labels of shape \(2,\)"),
    "test-missing": ({"test": None}, "test: expected a torch Dataset"),
    "not-pairs": ({"train": NotAPair()}, r"train: expected a Dataset of \(input, label\) pairs"),
    "float-labels": ({"train": TensorDataset(torch.zeros(8, 6), torch.zeros(8))}, "train: expected integer"),
    "label-out-of-range": ({"num_classes": 2}, r"expected class labels in \[0, 2\), got 2"),
    "lambda-with-jobs": ({"model": lambda c: helpers.make_model(c), "jobs": 2}, "model: expected something"),
    "bad-penultimate": ({"penultimate": "nope"}, "penultimate: expected the name of an nn.Linear"),
    "bad-optimizer": ({"optimizer": "lion"}, "optimizer: expected one of"),
    "bad-executor": ({"executor": "dask"}, "executor: expected one of"),
    "zero-jobs": ({"jobs": 0}, "jobs: expected an int >= 1"),
    "val-fraction-one": ({"val_fraction": 1.0}, r"val_fraction: expected a fraction in \[0, 1\)"),
    "resume-and-overwrite": ({"resume": True, "overwrite": True}, "resume: expected either"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_names_the_argument_and_writes_nothing(tmp_path, case):
    kwargs, match = BAD[case]
    with pytest.raises((ValueError, TypeError), match=match):
        user_compare(out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_data_errors_are_value_errors():
    with pytest.raises(DataError):
        from_datasets(helpers.blobs(6, seed=0), [1, 2, 3])

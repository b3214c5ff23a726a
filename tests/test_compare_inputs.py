"""``compare`` claims no more than its data: inputs refused before training, runs that crashed or did not
learn, the warnings a user needs, the figures, the options' one home, and the fast command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("click")

import compare_helpers as helpers
from labelsmooth import _lazy
from labelsmooth.cli import main
from labelsmooth.experiments import CompareConfig, DataError, Progress, RunResult, compare
from labelsmooth.experiments._config import DEFAULTS
from labelsmooth.experiments._warnings import probabilities, undertrained
from labelsmooth.experiments.data import from_datasets
from labelsmooth.experiments.evaluate import Predictions, learned_check

HELPERS = Path(helpers.__file__).parent
#: One quick run per alpha: enough for every decision tested here.
QUICK = {"seeds": 1, "ci": False, "epochs": 1, "batch_size": 16, "lr": 0.01}


def quick(**kwargs):
    return compare(**{**helpers.options(), **QUICK, **kwargs})


def cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- inputs --------------------------------------------------------------------------------------------------

def test_a_nan_input_is_refused_naming_the_split_and_the_row():
    test = helpers.blobs(60, seed=2)
    inputs = test.tensors[0].clone()
    inputs[7, 2] = float("nan")
    with pytest.raises(DataError, match=r"test: expected finite inputs .*row 7"):
        quick(test=TensorDataset(inputs, test.tensors[1]))


def test_an_infinite_input_in_a_dataset_read_item_by_item_is_refused():
    train = helpers.blobs(90, seed=1)
    inputs = train.tensors[0].clone()
    inputs[11, 0] = float("inf")
    items = [(inputs[i], train.tensors[1][i]) for i in range(len(inputs))]  # a list: not a TensorDataset
    with pytest.raises(DataError, match=r"train: expected finite inputs .*row 11"):
        from_datasets(ListDataset(items), helpers.blobs(60, seed=2))


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def with_label(dataset: TensorDataset, value: int, rows: slice) -> TensorDataset:
    labels = dataset.tensors[1].clone()
    labels[rows] = value
    return TensorDataset(dataset.tensors[0], labels)


def test_a_label_far_above_the_others_points_to_ignore_index():
    train = with_label(helpers.blobs(90, seed=1), 255, slice(0, 5))
    with pytest.raises(DataError, match=r"ignore_index=255 / --ignore-index 255"):
        from_datasets(train, helpers.blobs(60, seed=2))
    data = from_datasets(train, helpers.blobs(60, seed=2), ignore_index=255)
    assert data.num_classes == 3 and data.ignore_index == 255


def test_ignore_index_on_the_command_line_reaches_compare(capsys, tmp_path, monkeypatch):
    import labelsmooth.experiments

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt

    monkeypatch.chdir(HELPERS)
    monkeypatch.setattr(labelsmooth.experiments, "compare", fake)
    cli(capsys, "compare", "--data", "compare_helpers:loader", "--ignore-index", "255",
        "--out", tmp_path / "o")
    assert seen["ignore_index"] == 255 and seen["data"].ignore_index == 255


class ReluNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(helpers.DIM, 16), nn.ReLU())
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.classifier(self.trunk(x))


class TanhNet(ReluNet):
    """The same parameters, names and initialization; another activation."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.trunk[1] = nn.Tanh()


def test_resume_refuses_a_model_that_changed_only_its_activation(tmp_path):
    torch.manual_seed(0)
    relu = ReluNet(3).state_dict()
    torch.manual_seed(0)
    assert all(torch.equal(relu[k], v) for k, v in TanhNet(3).state_dict().items())  # same weights
    quick(model=ReluNet, alphas=[0.0], out=tmp_path / "o")
    with pytest.raises(ValueError, match=r"model_hash"):
        quick(model=TanhNet, alphas=[0.0], out=tmp_path / "o", resume=True)


# -- runs that crash or do not learn ----------------------------------------------------------------------

class FailsInTraining(nn.Module):
    """Takes the probe's batch (eval mode), raises on the first training batch."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(helpers.DIM, num_classes)

    def forward(self, x):
        if self.training:
            raise RuntimeError("Expected more than 1 value per channel when training")
        return self.linear(x)


def fails_in_training(num_classes: int) -> nn.Module:
    return FailsInTraining(num_classes)


def test_a_crash_in_a_run_is_one_line_exit_1_and_the_rerun_needs_no_overwrite(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(HELPERS)
    monkeypatch.setitem(sys.modules, "test_compare_inputs", sys.modules[__name__])
    out = tmp_path / "o"
    args = ["compare", "--data", "compare_helpers:loader", "--seeds", "1", "--no-ci", "--epochs", "3",
            "--batch-size", "16", "--lr", "0.01", "--out", out]
    status, _, err = cli(capsys, *args, "--model", "test_compare_inputs:fails_in_training")
    assert status == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == ("labelsmooth: error: run alpha=0 seed=0 failed: RuntimeError: Expected "
                                    "more than 1 value per channel when training")
    status, _, err = cli(capsys, *args, "--model", "test_compare_inputs:fails_in_training", "--debug")
    assert status == 1 and "Traceback" in err and 'raise RuntimeError("Expected more' in err
    status, _, err = cli(capsys, *args, "--model", "compare_helpers:make_model")
    assert status == 0, err


def test_a_diverged_run_gives_its_loss_as_the_first_reason():
    logits = torch.full((6, 3), float("nan"), dtype=torch.float64)
    check = learned_check(Predictions(logits, torch.arange(6) % 3, 3), [{"train_loss": float("nan")}])
    assert not check["learned"]
    assert check["reasons"][0] == "the training loss became non-finite"


def test_no_best_alpha_among_runs_that_did_not_learn():
    from test_compare_report import CLASSIFICATION, constructed, run

    good = dict.fromkeys(CLASSIFICATION, 0.5)
    # alpha 0.1 has the higher accuracy, but one of its runs did not learn.
    runs = [run(0.0, s, metrics=good) for s in (0, 1)] + [
        run(0.1, 0, metrics={**good, "accuracy": 0.9}),
        run(0.1, 1, metrics={**good, "accuracy": 0.9}, learned=False)]
    from labelsmooth.experiments.report import verdicts

    accuracy = verdicts(constructed(runs))[0]
    assert "best at alpha 0 " in accuracy and "best at alpha 0.1" not in accuracy


def test_figures_mark_the_runs_that_did_not_learn():
    from labelsmooth.experiments._figures import curves_figure, reliability_figure
    from test_compare_report import constructed, run

    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}]
    result = constructed([run(0.0, 0, history=history), run(0.1, 0, history=history, learned=False)])
    titles = [ax.get_title() for ax in reliability_figure(result).axes]
    assert any("alpha = 0.1" in t and "did not learn" in t for t in titles)
    assert not any("alpha = 0 " in t and "did not learn" in t for t in titles)
    labels = curves_figure(result).axes[0].get_legend_handles_labels()[1]
    assert "alpha = 0.1 (1 of 1 runs did not learn)" in labels and "alpha = 0" in labels


# -- warnings ------------------------------------------------------------------------------------------------

def test_test_classes_absent_from_training_are_warned_about():
    train = helpers.blobs(90, seed=1, classes=2)
    result = quick(train=train, num_classes=3, alphas=[0.0])
    assert any("test classes [2] never occur in the training split (20 of 60" in w for w in result.warnings)


def softmax_model(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(helpers.DIM, num_classes), nn.Softmax(dim=1))


def test_outputs_that_are_probabilities_are_warned_about():
    result = quick(model=softmax_model, alphas=[0.0])
    assert any("already probabilities" in w for w in result.warnings)
    assert probabilities(torch.randn(4, 3)) is None  # logits: no warning


def history_of(val_losses):
    return [{"epoch": k + 1, "train_loss": 1.0, "val_loss": v} for k, v in enumerate(val_losses)]


def test_undertrained_only_when_every_run_is_best_at_its_last_epoch():
    still_falling = RunResult(0.0, 0, {}, None, history_of([1.0, 0.8, 0.6]))
    turned = RunResult(0.1, 0, {}, None, history_of([1.0, 0.5, 0.6]))
    assert "lowest at its last epoch" in undertrained([still_falling, still_falling])
    assert undertrained([still_falling, turned]) is None


# -- figures -------------------------------------------------------------------------------------------------

def overlapping(n: int, seed: int) -> TensorDataset:
    """Blobs whose centres are close: a model gets many right and many wrong (a temperature fit needs
    validation errors)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, helpers.DIM, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % 3
    return TensorDataset(centres[labels] + torch.randn(n, helpers.DIM, generator=generator), labels)


def test_reliability_after_temperature_scaling_pools_the_scaled_predictions(tmp_path):
    from labelsmooth.experiments import read_run

    result = compare(**{**helpers.options(), "train": overlapping(150, 1), "val": overlapping(90, 3),
                        "test": overlapping(90, 2)}, out=tmp_path / "o")
    assert (tmp_path / "o" / "reliability_ts.png").is_file()
    assert "## Reliability diagrams after temperature scaling" in (tmp_path / "o" / "report.md").read_text()
    trusted = [r for r in result.runs_of(0.1) if r.temperature_ok]
    assert trusted
    # The reference: softmax of the saved logits over each run's T, in Guo et al.'s 15 bins (lo, hi].
    edges = torch.linspace(0, 1, 16).double()
    counts = torch.zeros(15, dtype=torch.long)
    for r in trusted:
        record = read_run(tmp_path / "o" / "predictions" / f"alpha0.1_seed{r.seed}.npz")
        probs = torch.softmax(torch.from_numpy(record.test.logits).double() / r.temperature, 1)
        counts += torch.bincount(torch.bucketize(probs.max(1).values, edges) - 1, minlength=15)
    pooled = result.reliability(0.1, scaled=True)
    assert pooled["n_seeds"] == len(trusted) and pooled["count"] == counts.tolist()
    assert pooled["count"] != result.reliability(0.1)["count"]  # scaling moved predictions between bins


def test_a_binary_task_draws_no_penultimate_figure_and_says_why(tmp_path):
    train, test = helpers.blobs(60, seed=1, classes=2), helpers.blobs(40, seed=2, classes=2)
    result = quick(train=train, test=test, alphas=[0.0, 0.1], out=tmp_path / "o")
    assert not (tmp_path / "o" / "penultimate.png").exists()
    note = "No penultimate-layer picture: it shows three classes, and this task has 2."
    assert note in result.notes and note in (tmp_path / "o" / "report.md").read_text()


# -- options -------------------------------------------------------------------------------------------------

def test_the_command_reads_its_defaults_from_the_config():
    from labelsmooth._cli import compare as command

    for param in command.params:
        # The command always writes its report (to runs/compare by default); a Python call only with out=.
        if param.name in DEFAULTS and param.name not in ("alphas", "out"):
            assert param.default == DEFAULTS[param.name], param.name
    alphas = next(p for p in command.params if p.name == "alphas").default
    assert tuple(float(a) for a in alphas.split()) == DEFAULTS["alphas"]


def test_the_config_checks_every_option_in_one_vocabulary():
    with pytest.raises(ValueError, match=r"seeds: expected at least 2 seeds .*\(or ci=False\), got 1"):
        CompareConfig(seeds=1)
    with pytest.raises(ValueError, match=r"seeds: expected .*\(or --no-ci\), got 1"):
        CompareConfig(seeds=1, cli=True)
    with pytest.raises(TypeError, match=r"jobs: expected an int, got '2'"):
        CompareConfig(jobs="2")
    with pytest.raises(ValueError, match=r"alphas: expected .* with allow_negative=True"):
        CompareConfig(alphas=(0.0, -0.1))
    assert CompareConfig(alphas=(0.0, -0.1), allow_negative=True).alphas == (0.0, -0.1)


def test_conventions_match_the_validation_module():
    from labelsmooth import _validation
    from labelsmooth.experiments import _config

    assert _config.CONVENTIONS == _validation.CONVENTIONS


def test_negative_alphas_train_with_allow_negative(monkeypatch):
    import labelsmooth.experiments.train as train_module

    made = []
    real = train_module.LabelSmoothing

    def recording(*args, **kwargs):
        made.append(kwargs.get("allow_negative"))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "LabelSmoothing", recording)
    with pytest.raises(ValueError, match="allow_negative"):
        quick(alphas=[0.0, -0.1])
    result = quick(alphas=[0.0, -0.1], allow_negative=True)
    assert made == [True, True] and [r.alpha for r in result.runs] == [0.0, -0.1]
    assert all(r.history[0]["train_loss"] == r.history[0]["train_loss"] for r in result.runs)  # not NaN


def test_segmentation_refuses_a_negative_alpha():
    from labelsmooth.experiments.data import generate_shapes

    x, y = generate_shapes(8, size=16, seed=5)
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    with pytest.raises(ValueError, match=r"alphas: expected alphas >= 0 for segmentation"):
        compare(model=helpers.make_segnet, train=data, test=data, ignore_index=255, alphas=[0.0, -0.1],
                allow_negative=True, **QUICK)


def test_the_readme_lists_every_public_name_of_experiments():
    import labelsmooth.experiments as experiments

    readme = (HELPERS.parent / "README.md").read_text()
    missing = [name for name in experiments.__all__ if f"`{name}`" not in readme]
    assert missing == []


# -- progress ------------------------------------------------------------------------------------------------

def test_eta_counts_runs_per_worker():
    """Two workers, each run 10 s: after the first of six, five are left, two at a time: 25 s."""
    progress = Progress(1, 6, 0, 0, 10.5, "", None, run_seconds=(10.0,), workers=2)
    assert progress.eta == pytest.approx(25.0)
    assert Progress(1, 6, 0, 0, 10.0, "").eta == pytest.approx(50.0)  # one worker


def test_a_worker_process_starts_with_the_configured_threads():
    from labelsmooth.experiments.executors import _start_worker

    context = type("Context", (), {"config": type("Config", (), {"threads": 1})()})()
    before, handler = torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    torch.set_num_threads(2)
    try:
        _start_worker(context)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        signal.signal(signal.SIGINT, handler)


# -- a fast command line --------------------------------------------------------------------------------

def test_help_imports_neither_torch_nor_dynamo():
    code = ("import sys; from labelsmooth.cli import main; status = main(['compare', '--help']); "
            "assert status == 0; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_ctrl_c_inside_a_deferred_import_leaves_the_module_whole(tmp_path, monkeypatch):
    (tmp_path / "interrupted_module.py").write_text(textwrap.dedent("""
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this module is half imported
        time.sleep(0.05)
        VALUE = 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {}
    with pytest.raises(KeyboardInterrupt):
        _lazy.attribute("pkg", namespace, "VALUE", {"VALUE": "interrupted_module"})
    # The interrupt came after the import: the module is whole, and the next access needs no import.
    assert sys.modules["interrupted_module"].VALUE == 1
    assert _lazy.attribute("pkg", namespace, "VALUE", {"VALUE": "interrupted_module"}) == 1


def test_lazy_names_are_the_modules_names():
    import labelsmooth
    from labelsmooth.functional import cross_entropy

    assert labelsmooth.cross_entropy is cross_entropy
    assert set(labelsmooth.__all__) <= set(dir(labelsmooth))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        labelsmooth.nope  # noqa: B018


def test_metrics_json_lists_the_warnings(tmp_path):
    quick(model=softmax_model, alphas=[0.0], out=tmp_path / "o")
    document = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert any("already probabilities" in w for w in document["warnings"])
    report = (tmp_path / "o" / "report.md").read_text()
    assert "> **Warning: the model's outputs are already probabilities" in report


"""The ``compare`` experiment end to end on tiny settings, its data sets, statistics and report files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
from PIL import Image

from compare_helpers import check_png, check_svg, make_image_folder, make_table, summary_keys
from labelsmooth import Engine, Event
from labelsmooth.experiments import DataError, compare, load_dataset
from labelsmooth.experiments.data import flip_labels, load_shapes
from labelsmooth.experiments.models import build_model
from labelsmooth.experiments.report import atomic_write
from labelsmooth.experiments.stats import inside_noise, mean_ci, paired_difference
from labelsmooth.experiments.train import TrainConfig, train

METRIC_NAMES = ("accuracy", "nll", "ece", "smooth_ece", "adaptive_ece", "classwise_ece", "brier", "aurc")
RUN_KEYS = {"alpha", "seed", *METRIC_NAMES, *(f"{n}_ts" for n in METRIC_NAMES), "temperature",
            "temperature_ok", "temperature_note", "learned", "learned_check", "history"}
HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
FIGURES = ("curves", "metrics_vs_alpha", "reliability")


def drawn(document: dict) -> list[str]:
    """The figures a report holds: the diagram after scaling needs a trusted temperature fit, the
    penultimate picture a run with three classes to show."""
    optional = {"reliability_ts": any(r["temperature_ok"] for r in document["runs"]),
                "penultimate": any(p["classes"] is not None for p in document["penultimate"])}
    return [*FIGURES, *(name for name, present in optional.items() if present)]


def check_outputs(out: Path, task: str) -> dict:
    document = json.loads((out / "metrics.json").read_text())
    files = ["metrics.json", "predictions", "report.md", "runs.jsonl",
             *(f"{f}.{kind}" for f in drawn(document) for kind in ("png", "svg"))]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    for name in drawn(document):
        check_png(out / f"{name}.png")
        check_svg(out / f"{name}.svg")
    assert document["task"] == task
    assert {"dataset", "task", "runs", "summary"} <= set(document)
    names = METRIC_NAMES + (("miou",) if task == "segmentation" else ())
    for run in document["runs"]:
        assert set(run) >= RUN_KEYS
        assert 0 <= run["accuracy"] <= 1 and run["nll"] >= 0 and 0 <= run["ece"] <= 1
        assert run["temperature"] > 0 and run["accuracy_ts"] == run["accuracy"]
        epochs = document["config"]["epochs"]
        assert [entry["epoch"] for entry in run["history"]] == list(range(1, epochs + 1))
        assert all(set(entry) == HISTORY_KEYS for entry in run["history"])
    for row in document["summary"]:
        assert set(row) == {"alpha", "n_seeds", "n_ts", "n_es", *summary_keys(names)}
    assert [b["alpha"] for b in document["reliability"]] == document["alphas"]
    report = (out / "report.md").read_text()
    assert "![reliability diagrams](reliability.png)" in report
    assert ("![penultimate layer](penultimate.png)" in report) == ("penultimate" in drawn(document))
    assert "![training curves](curves.png)" in report
    assert "![metrics against alpha](metrics_vs_alpha.png)" in report
    assert "noise" in report and "| alpha |" in report
    return document


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "out"
    return compare("digits", seeds=2, epochs=2, out=out), out


def test_digits_end_to_end(digits_run):
    result, out = digits_run
    document = check_outputs(out, "classification")
    assert document["dataset"] == "digits"
    assert [(r["alpha"], r["seed"]) for r in document["runs"]] == [(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)]
    assert [row["alpha"] for row in document["summary"]] == [0.0, 0.1]
    assert result.summary[0]["accuracy_mean"] > 0.5  # two epochs already learn digits
    by_scaling = {s: {c["metric"] for c in result.comparisons if c["scaling"] == s}
                  for s in ("none", "both", "baseline")}
    assert by_scaling["none"] == set(METRIC_NAMES)
    assert by_scaling["both"] == by_scaling["baseline"] == set(METRIC_NAMES) - {"accuracy"}
    assert [p["alpha"] for p in document["penultimate"]] == [0.0, 0.1]
    assert all(p["spread_to_separation"] > 0 for p in document["penultimate"])


def test_same_seed_same_numbers(digits_run):
    result, _ = digits_run
    again = compare("digits", seeds=2, epochs=2)
    assert again.to_dict() == result.to_dict()


def test_summary_matches_runs(digits_run):
    result, _ = digits_run
    accuracies = [r.metrics["accuracy"] for r in result.runs if r.alpha == 0.1]
    mean = sum(accuracies) / 2
    half = 12.706204736174698 * abs(accuracies[0] - accuracies[1]) / 2  # t_{0.975, 1} * sd / sqrt(2)
    assert result.summary[1]["accuracy_mean"] == pytest.approx(mean)
    assert result.summary[1]["accuracy_ci95"] == pytest.approx(half)


def test_shapes_segmentation_end_to_end(tmp_path):
    data = load_shapes(n_train=24, n_test=8)
    result = compare(data=data, seeds=2, epochs=1, out=tmp_path / "out")
    document = check_outputs(tmp_path / "out", "segmentation")
    assert all("miou" in run for run in document["runs"])
    assert {"miou_mean", "miou_ci95"} <= set(document["summary"][0])
    assert document["config"]["loss"] == "dice+cross_entropy"
    assert result.num_classes == 4


def test_shapes_have_ignore_borders_and_all_classes():
    data = load_shapes(n_train=16, n_test=4)
    targets = data.train.targets
    assert set(torch.unique(targets).tolist()) == {0, 1, 2, 3, 255}
    assert 0.02 < (targets == 255).double().mean().item() < 0.3


def test_image_folder_end_to_end(tmp_path):
    folder = make_image_folder(tmp_path / "images")
    (folder / "cat" / "notes.txt").write_text("skipped: not an image suffix")
    (folder / "dog" / ".DS_Store").write_bytes(b"\0")
    Image.new("RGB", (9, 9), (0, 200, 0)).save(folder / "dog" / "upper.JPG", format="JPEG")
    result = compare(folder, seeds=2, epochs=1, out=tmp_path / "out")
    check_outputs(tmp_path / "out", "classification")
    assert result.class_names == ("cat", "dog", "fox")
    assert result.dataset == "images"
    data = load_dataset(folder)
    assert data.train.inputs.shape[0] + data.test.inputs.shape[0] == 25  # 24 PNGs and the .JPG


@pytest.mark.parametrize("suffix", [".csv", ".parquet"], ids=["csv", "parquet"])
def test_table_end_to_end(tmp_path, suffix):
    table = make_table(tmp_path / f"blobs{suffix}")
    result = compare(table, seeds=2, epochs=2, label_column="species", out=tmp_path / "out")
    check_outputs(tmp_path / "out", "classification")
    assert result.class_names == ("a", "b", "c")


def test_two_class_table_has_no_projection_and_no_picture(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    path = tmp_path / "two.csv"
    pd.DataFrame({"x": rng.normal(size=40), "label": np.arange(40) % 2}).to_csv(path, index=False)
    result = compare(path, seeds=2, epochs=1, out=tmp_path / "out")
    assert result.runs[0].projection is None
    document = check_outputs(tmp_path / "out", "classification")
    assert "penultimate" not in drawn(document)


def test_mixup_and_cutmix_compose_with_smoothing(tmp_path):
    data = load_dataset("digits")
    result = compare(data=data, seeds=2, epochs=1, mixup=0.2, cutmix=1.0, out=tmp_path / "out")
    document = check_outputs(tmp_path / "out", "classification")
    assert document["config"]["mixup"] == 0.2 and document["config"]["cutmix"] == 1.0
    assert "MixUp 0.2 and CutMix 1" in (tmp_path / "out" / "report.md").read_text()
    plain = compare(data=data, seeds=2, epochs=1)
    assert [r.metrics for r in result.runs] != [r.metrics for r in plain.runs]


def test_cutmix_needs_images(tmp_path):
    table = make_table(tmp_path / "t.csv")
    with pytest.raises(ValueError, match="cutmix: expected image data"):
        compare(table, label_column="species", cutmix=1.0)


def test_one_seed_without_ci(tmp_path):
    data = load_dataset("digits")
    result = compare(data=data, seeds=1, epochs=1, ci=False, alphas=[0.1])
    assert result.summary[0]["accuracy_ci95"] is None
    assert result.comparisons == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alphas": [0.0, 1.5]}, "alphas: expected a real number in \\[0, 1\\], got 1.5"),
        ({"alphas": [-0.1]}, "alphas: expected a real number"),
        ({"alphas": []}, "alphas: expected a non-empty list"),
        ({"alphas": [0.1, 0.1]}, "alphas: expected distinct"),
        ({"seeds": 1}, "seeds: expected at least 2 seeds"),
        ({"epochs": 0}, "epochs: expected an int >= 1"),
        ({"label_noise": 2.0}, "label_noise"),
        ({"convention": "none"}, "convention"),
        ({"mixup": -1.0}, "mixup: expected a finite real number >= 0"),
    ],
    ids=["alpha-above-one", "alpha-negative", "no-alphas", "repeated-alpha", "one-seed-with-ci",
         "zero-epochs", "noise-above-one", "bad-convention", "negative-mixup"],
)
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare("digits", out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_data_paths(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "only" / "a.png")
    broken = make_image_folder(tmp_path / "broken", per_class=2)
    (broken / "cat" / "notes.png").write_text("not an image")
    table = make_table(tmp_path / "t.csv")
    (tmp_path / "data.txt").write_text("x")
    for name in ("a", "b"):  # two subfolders, no image in either
        (tmp_path / "imageless" / name).mkdir(parents=True)
        (tmp_path / "imageless" / name / "readme.txt").write_text("x")
    cases = {
        tmp_path / "missing": "that exists",
        tmp_path / "flat": "at least two class subfolders",
        tmp_path / "one": "at least two class subfolders",
        tmp_path / "imageless": r"holding images .*imageless with 2 subfolder\(s\), 0 holding images'",
        broken: "readable image files.*notes.png",
        tmp_path / "data.txt": "a .csv/.parquet file",
    }
    for path, match in cases.items():
        with pytest.raises(DataError, match=match):
            load_dataset(path)
    with pytest.raises(DataError, match=r"label_column: expected a column of t\.csv .*got 'target'"):
        load_dataset(table, label_column="target")


def test_flip_labels_moves_exactly_the_fraction():
    targets = torch.arange(100) % 5
    flipped = flip_labels(targets, 0.3, 5, generator=torch.Generator().manual_seed(0))
    assert (flipped != targets).sum().item() == 30
    assert flipped.min().item() >= 0 and flipped.max().item() < 5
    assert torch.equal(targets, torch.arange(100) % 5)  # input untouched


def test_flip_labels_leaves_ignored_pixels():
    targets = torch.tensor([[0, 255, 1], [255, 2, 0]])
    flipped = flip_labels(targets, 1.0, 3, generator=torch.Generator().manual_seed(0), ignore_index=255)
    assert torch.equal(flipped == 255, targets == 255)
    assert bool((flipped[targets != 255] != targets[targets != 255]).all())


def test_training_runs_label_smoothing_at_the_loss_events(monkeypatch):
    """The loop runs on the library's Engine: smoothed dense targets exist only inside the loss events."""
    seen = []
    original = Engine.run_event

    def spy(self, event):
        traces = original(self, event)
        if event in (Event.BEFORE_FORWARD, Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.BEFORE_BACKWARD):
            target = self.state.batch[1]
            seen.append((event, target.is_floating_point(), [t.run for t in traces]))
        return traces

    monkeypatch.setattr(Engine, "run_event", spy)
    data = load_shapes(n_train=4, n_test=2)
    train(data, lambda c: build_model(data), 0.1, 0, TrainConfig(epochs=1, batch_size=4, lr=1e-3))
    assert seen == [
        (Event.BEFORE_FORWARD, False, [False]),
        (Event.BEFORE_LOSS, True, [True]),
        (Event.AFTER_LOSS, False, [True]),
        (Event.BEFORE_BACKWARD, False, [False]),
    ]


def test_mean_ci_matches_scipy_interval():
    stats = pytest.importorskip("scipy.stats")
    values = [0.91, 0.93, 0.96, 0.9]
    mean, half = mean_ci(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((high - low) / 2)
    assert mean_ci([0.5]) == (0.5, None)


def test_paired_difference_and_noise():
    diff, half = paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert diff == pytest.approx(1.0) and half == pytest.approx(0.0)
    assert not inside_noise(diff, half)
    assert inside_noise(0.1, 0.2) and inside_noise(0.1, None)


def test_atomic_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    target = tmp_path / "report.md"
    atomic_write(target, b"x")
    assert target.stat().st_mode == plain.stat().st_mode


def test_core_import_does_not_need_the_cli_extra():
    code = (
        "import sys, labelsmooth, labelsmooth.metrics\n"
        "heavy = {'click', 'matplotlib', 'sklearn', 'pandas', 'PIL', 'scipy', 'pyarrow'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


@pytest.mark.slow
def test_default_digits_run_learns_and_smoothing_tightens_clusters():
    """The README's default run (two of its seeds): a good digits model, and tighter penultimate clusters."""
    result = compare("digits", seeds=2)
    assert all(row["accuracy_mean"] > 0.95 for row in result.summary)
    tightness = {r.alpha: r.cluster_tightness() for r in result.runs if r.seed == 0}
    assert tightness[0.1] < tightness[0.0]
    # Smoothing lowers the confidence: on this clean, easy task the model ends under-confident.
    smoothed = next(r for r in result.runs if r.alpha == 0.1 and r.seed == 0)
    bins = smoothed.bins
    assert ((bins.accuracy - bins.confidence) * bins.count).sum().item() > 0


def test_deterministic_context_restores_torch_settings():
    from labelsmooth.experiments.train import deterministic

    threads = torch.get_num_threads()
    with deterministic(threads=1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads


def test_rounding_noise_prints_as_zero():
    """A paired difference that is 0 in exact arithmetic but not in floats prints as 0, not 1.39e-17."""
    from labelsmooth.experiments._analysis import summarize
    from labelsmooth.experiments._results import CompareResult, RunResult
    from labelsmooth.experiments.report import noise_statement
    from labelsmooth.metrics import reliability_bins

    bins = reliability_bins(torch.tensor([[0.6, 0.4]]), torch.tensor([0]))
    values = {(0.0, 0): 0.1, (0.0, 1): 0.7, (0.1, 0): 0.3, (0.1, 1): 0.5}
    runs = [RunResult(a, s, {"accuracy": acc, "nll": 0.5, "ece": 0.1}, bins)
            for (a, s), acc in values.items()]
    result = CompareResult("t", "classification", 2, ("a", "b"), [0.0, 0.1], [0, 1], TrainConfig(1, 1, 1.0),
                           runs)
    summarize(result)
    accuracy = next(c for c in result.comparisons if c["metric"] == "accuracy")
    assert accuracy["difference_mean"] != 0.0  # (0.3 - 0.1) + (0.5 - 0.7) is not exactly 0 in floats
    sentence = next(s for s in noise_statement(result) if s.startswith("- accuracy"))
    assert "alpha=0.1 vs alpha=0: 0 ± 254 points." in sentence and "e-1" not in sentence

"""``compare``: train the same model once per alpha and seed, evaluate, summarize."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelsmooth import _validation as v
from labelsmooth.experiments.data import DataSet, load_dataset
from labelsmooth.experiments.stats import inside_noise, mean_ci, paired_difference
from labelsmooth.experiments.train import RunResult, TrainConfig, deterministic, evaluate, train

#: (epochs, batch size, learning rate) per kind of data set.
DEFAULTS = {
    "digits": (15, 64, 3e-3), "shapes": (15, 16, 3e-3), "image": (15, 32, 1e-3), "table": (40, 64, 3e-3),
}
METRICS = {"classification": ("accuracy", "nll", "ece"), "segmentation": ("accuracy", "nll", "ece", "miou")}
#: For each metric, whether larger is better.
HIGHER_IS_BETTER = {"accuracy": True, "nll": False, "ece": False, "miou": True}


@dataclass
class CompareResult:
    """Every run, the per-alpha summary and the paired comparisons against the first alpha."""

    dataset: str
    task: str
    num_classes: int
    class_names: tuple[str, ...]
    alphas: list[float]
    seeds: list[int]
    config: TrainConfig
    runs: list[RunResult] = field(repr=False)
    summary: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.task]

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` document."""
        return {
            "dataset": self.dataset, "task": self.task, "num_classes": self.num_classes,
            "alphas": self.alphas, "seeds": self.seeds,
            "config": {
                "epochs": self.config.epochs, "batch_size": self.config.batch_size, "lr": self.config.lr,
                "convention": self.config.convention, "label_noise": self.config.label_noise,
                "mixup": self.config.mixup, "cutmix": self.config.cutmix,
                "loss": "dice+cross_entropy" if self.task == "segmentation" else "cross_entropy",
                "ece_bins": 15, "ece_binning": "guo", "ci_level": 0.95,
            },
            "runs": [run.record() for run in self.runs],
            "summary": self.summary,
            "penultimate": [
                {"alpha": r.alpha, "seed": r.seed, "classes": r.projection_classes,
                 "spread_to_separation": r.cluster_tightness()}
                for r in self.runs if r.seed == 0
            ],
            "comparisons": self.comparisons,
        }


def _check_alphas(alphas: Sequence[float]) -> list[float]:
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence) or len(alphas) == 0:
        raise v.fail("alphas", "a non-empty list of numbers in [0, 1]", alphas)
    checked = [v.check_probability(a, "alphas") for a in alphas]
    if len(set(checked)) != len(checked):
        raise v.fail("alphas", "distinct values", alphas)
    return checked


def _check_options(alphas: Sequence[float], seeds: int, ci: bool, epochs: int | None,
                   label_noise: float, convention: str, mixup: float | None = None,
                   cutmix: float | None = None) -> list[float]:
    checked = _check_alphas(alphas)
    seeds = v.check_int(seeds, "seeds")
    if seeds < (2 if ci else 1):
        expected = "at least 2 seeds for a confidence interval (or ci=False)" if ci else "at least 1 seed"
        raise v.fail("seeds", expected, seeds)
    if epochs is not None and v.check_int(epochs, "epochs") < 1:
        raise v.fail("epochs", "an int >= 1", epochs)
    v.check_probability(label_noise, "label_noise")
    v.check_convention(convention)
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if value is not None:
            v.check_nonnegative(value, name)
    return checked


def summarize(result: CompareResult, ci: bool = True) -> None:
    """Fill ``result.summary`` (mean, CI per alpha) and ``result.comparisons`` (paired by seed)."""
    names = result.metric_names
    by_alpha = {
        a: sorted((r for r in result.runs if r.alpha == a), key=lambda r: r.seed) for a in result.alphas
    }
    result.summary = []
    for alpha in result.alphas:
        row: dict[str, Any] = {"alpha": alpha, "n_seeds": len(by_alpha[alpha])}
        for name in names:
            mean, half = mean_ci([r.metrics[name] for r in by_alpha[alpha]])
            row[f"{name}_mean"], row[f"{name}_ci95"] = mean, half if ci else None
        result.summary.append(row)
    base = result.alphas[0]
    result.comparisons = []
    for alpha in result.alphas[1:]:
        for name in names:
            diff, half = paired_difference(
                [r.metrics[name] for r in by_alpha[alpha]], [r.metrics[name] for r in by_alpha[base]]
            )
            half = half if ci else None
            noise = inside_noise(diff, half)
            better = (diff > 0) == HIGHER_IS_BETTER[name]
            result.comparisons.append({
                "alpha": alpha, "baseline_alpha": base, "metric": name, "difference_mean": diff,
                "difference_ci95": half, "inside_noise": noise,
                "verdict": "inside the noise" if noise else ("better" if better else "worse"),
            })


def compare(
    dataset: str | os.PathLike[str] = "digits",
    *,
    alphas: Sequence[float] = (0.0, 0.1),
    seeds: int = 3,
    epochs: int | None = None,
    label_noise: float = 0.0,
    convention: str = "uniform",
    mixup: float | None = None,
    cutmix: float | None = None,
    device: str = "cpu",
    label_column: str = "label",
    ci: bool = True,
    out: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    data: DataSet | None = None,
) -> CompareResult:
    """Train the same model once per alpha and seed; report accuracy, NLL, ECE (and mean IoU).

    Runs seeds ``0 .. seeds - 1`` for every alpha, with the same initialization,
    data order and label noise for a given seed, so alphas are compared run by
    run. The summary gives the mean and a 95% Student-t interval over seeds;
    the comparisons give the paired difference to the first alpha and say
    whether it is inside the noise (its interval contains 0).

    Args:
        dataset: ``"digits"``, ``"shapes"``, a folder of class subfolders or a
            ``.csv``/``.parquet`` table (label in ``label_column``).
        alphas: smoothing values in [0, 1]; the first is the baseline.
        seeds: number of seeds (at least 2 when ``ci``).
        epochs: training epochs; ``None`` picks the data set's default.
        label_noise: fraction of training labels moved to another class.
        convention: ``"uniform"`` or ``"others"``; see :func:`labelsmooth.smooth_labels`.
        mixup, cutmix: Beta concentration of :class:`~labelsmooth.MixUp` /
            :class:`~labelsmooth.CutMix` added to every run (``None``: off);
            CutMix needs image data.
        device: a torch device string.
        ci: compute 95% confidence intervals.
        out: if given, write ``metrics.json``, ``reliability.png``,
            ``penultimate.png`` and ``report.md`` there.
        progress: called as ``progress(step, total_steps, description)`` after
            every optimizer step.
        data: an already loaded :class:`DataSet` (overrides ``dataset``).

    Returns:
        A :class:`CompareResult`; ``result.to_dict()`` is ``metrics.json``.
    """
    checked = _check_options(alphas, seeds, ci, epochs, label_noise, convention, mixup, cutmix)
    if data is None:
        data = load_dataset(dataset, label_column=label_column)
    if cutmix is not None and data.kind != "image":
        raise v.fail("cutmix", "image data (CutMix pastes a box of pixels)", f"a {data.kind} data set")
    kind = data.name if data.name in DEFAULTS else data.kind
    default_epochs, batch_size, lr = DEFAULTS[kind]
    config = TrainConfig(epochs or default_epochs, batch_size, lr, convention, float(label_noise), device,
                         mixup, cutmix)
    steps_per_run = config.epochs * -(-data.train.inputs.shape[0] // batch_size)
    total, done = steps_per_run * len(checked) * seeds, 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, description)

    runs = []
    with deterministic(device=device):
        for seed in range(seeds):
            for alpha in checked:
                description = f"alpha={alpha:g} seed={seed}"
                model = train(data, alpha, seed, config, on_step=step)
                runs.append(evaluate(model, data, alpha, seed, device))
    result = CompareResult(data.name, data.task, data.num_classes, data.class_names, checked,
                           list(range(seeds)), config, runs)
    summarize(result, ci)
    if out is not None:
        from labelsmooth.experiments.report import write_report

        write_report(result, Path(out))
    return result

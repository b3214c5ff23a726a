"""``compare``: train the same model once per alpha and seed, evaluate, summarize.

It is made of four parts: the data and the model factory (the user's, or
the built-in ones), :func:`~labelsmooth.experiments.run.execute` (one run,
a pure function), an executor (:mod:`.executors`) and the run store
(:mod:`.store`), from which the summary and the report are derived.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelsmooth import _validation as v
from labelsmooth.experiments import options, provenance
from labelsmooth.experiments._analysis import attach_examples, summarize
from labelsmooth.experiments._records import PREDICTIONS, record_name, write_record
from labelsmooth.experiments._results import CompareResult, RunResult
from labelsmooth.experiments.data import (
    VAL_FRACTION,
    DataSet,
    fail,
    from_datasets,
    prepare,
    size,
    take,
    tensor_bytes,
)
from labelsmooth.experiments.evaluate import metric_names
from labelsmooth.experiments.executors import check_picklable, run_local, run_processes, run_ray
from labelsmooth.experiments.models import BuiltinModel, last_layer
from labelsmooth.experiments.provenance import call_text
from labelsmooth.experiments.run import RunContext
from labelsmooth.experiments.sources import load_dataset
from labelsmooth.experiments.store import RunStore, check_out
from labelsmooth.experiments.train import ModelFactory, TrainConfig, deterministic, seed_everything

__all__ = ["DEFAULTS", "CompareResult", "Progress", "compare", "load", "probe", "summarize"]

#: (epochs, batch size, learning rate) per kind of data set; "custom" is the user's own Datasets.
DEFAULTS = {
    "digits": (15, 64, 3e-3), "shapes": (15, 16, 3e-3), "mnist1d": (60, 100, 1e-2), "image": (15, 32, 1e-3),
    "table": (40, 64, 3e-3), "custom": (10, 64, 1e-3),
}
#: How the penultimate-layer panels are scaled: one scale for all (comparable), or each its own.
PENULTIMATE_SCALES = ("shared", "own")


@dataclass(frozen=True)
class Progress:
    """Where a comparison stands, handed to ``compare``'s ``progress`` callback.

    ``steps_done``/``steps_total`` count optimizer steps of the runs in this
    process (0 with worker processes or Ray); ``finished`` is the run that just
    ended, if one did.
    """

    runs_done: int
    runs_total: int
    steps_done: int
    steps_total: int
    elapsed: float
    description: str
    finished: RunResult | None = None

    @property
    def eta(self) -> float | None:
        """Seconds left, from the mean time per finished run (``None`` before the first one)."""
        if self.runs_done == 0:
            return None
        return self.elapsed / self.runs_done * (self.runs_total - self.runs_done)


def load(dataset: str | os.PathLike[str] | None = None, *, train: object = None, test: object = None,
         val: object = None, data: DataSet | None = None, num_classes: int | None = None,
         ignore_index: int | None = None, val_fraction: float = VAL_FRACTION, label_column: str = "label",
         image_size: int = 32) -> DataSet:
    """The data of a comparison, with its labels read and its validation split held out."""
    if data is not None:
        return prepare(data, val_fraction=val_fraction)
    if train is not None or test is not None:
        if dataset is not None:
            raise fail("dataset", "no dataset when train= and test= are given", str(dataset))
        if train is None or test is None:
            missing = "test" if train is not None else "train"
            raise fail(missing, "a torch Dataset (train= and test= go together)", None)
        return from_datasets(train, test, val, num_classes=num_classes, ignore_index=ignore_index,
                             val_fraction=val_fraction)
    loaded = load_dataset("digits" if dataset is None else dataset, label_column=label_column,
                          image_size=image_size)
    return prepare(loaded, val_fraction=val_fraction)


def _identity(obj: object) -> str:
    if isinstance(obj, BuiltinModel):
        return obj.name
    if isinstance(obj, str):
        return obj
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def probe(factory: ModelFactory, data: DataSet, config: TrainConfig,
          penultimate: str | None) -> tuple[str | None, str, str]:
    """Build the model once (seed 0) and check it fits the data, before any run starts.

    Returns the penultimate layer's name (or ``None``), a note when there is
    none, and a hash of the initial weights (part of the settings' hash).
    """
    device = torch.device(config.device)
    with deterministic(threads=config.threads, device=config.device):
        seed_everything(0)
        model = factory(data.num_classes)
        if not isinstance(model, nn.Module):
            raise fail("model", "a callable(num_classes) returning a torch.nn.Module",
                       f"a {type(model).__name__} from {_identity(factory)}({data.num_classes})")
        inputs, targets = take(data.train, torch.arange(min(2, size(data.train))))
        model = model.to(device).eval()
        try:
            with torch.no_grad():
                logits = model(inputs.to(device))
        except Exception as error:  # the model does not take these inputs: say so in one line
            raise fail("model", f"a model that takes a batch of inputs of shape {tuple(inputs.shape)}",
                       f"{type(error).__name__}: {error}".splitlines()[0]) from None
    expected = (targets.shape[0], data.num_classes, *targets.shape[1:])
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise fail("model", f"logits of shape {expected} for labels of shape {tuple(targets.shape)} "
                   f"({data.num_classes} classes)", got)
    layer, note = last_layer(model, data.num_classes, penultimate)
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor_bytes(tensor))
    return layer, note, weights.hexdigest()[:16]


def _settings(data: DataSet, factory: ModelFactory, config: TrainConfig, layer: str | None,
              init: str) -> dict[str, Any]:
    """Everything that changes a run's result (not the grid, the executor or the number of jobs)."""
    return {
        "dataset": data.name, "data_fingerprint": data.fingerprint, "task": data.task,
        "num_classes": data.num_classes, "ignore_index": data.ignore_index,
        "model": _identity(factory), "model_init": init, "penultimate": layer,
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "weight_decay": config.weight_decay, "optimizer": _identity(config.optimizer),
        "convention": config.convention, "label_noise": config.label_noise, "mixup": config.mixup,
        "cutmix": config.cutmix, "device": config.device, "threads": config.threads,
        # What each run measures: a store written before temperature scaling cannot be resumed.
        "measured": [*metric_names(data.task), "temperature"],
    }


def _results(context: RunContext, grid: list[tuple[float, int]], *, jobs: int, executor: str,
             ray_address: str | None, on_step: Callable[[], None]) -> Iterator[RunResult]:
    if executor == "ray":
        return run_ray(context, grid, ray_address)
    if jobs > 1 and len(grid) > 1:
        return run_processes(context, grid, jobs)
    return run_local(context, grid, on_step)


@dataclass
class _Tracker:
    """Counts steps and runs and calls the user's ``progress`` callback."""

    callback: Callable[[Progress], None] | None
    runs_total: int
    steps_total: int
    started: float = field(default_factory=time.perf_counter)
    runs_done: int = 0
    steps_done: int = 0
    description: str = ""

    def _tell(self, finished: RunResult | None = None) -> None:
        if self.callback is not None:
            self.callback(Progress(self.runs_done, self.runs_total, self.steps_done, self.steps_total,
                                   time.perf_counter() - self.started, self.description, finished))

    def step(self) -> None:
        self.steps_done += 1
        self._tell()

    def finished(self, result: RunResult) -> None:
        self.runs_done += 1
        self.description = f"alpha={result.alpha:g} seed={result.seed}"
        self._tell(result)


def _grid(alphas: list[float], seeds: int,
          done: list[RunResult]) -> tuple[list[tuple[float, int]], list[RunResult]]:
    """The runs still to do, in report order (seed by seed), and the finished runs that belong to the grid."""
    wanted = [(alpha, seed) for seed in range(seeds) for alpha in alphas]
    kept: dict[tuple[float, int], RunResult] = {}
    for run in done:
        kept.setdefault((run.alpha, run.seed), run)
    return [job for job in wanted if job not in kept], [kept[job] for job in wanted if job in kept]


def _config(data: DataSet, *, epochs: int | None, batch_size: int | None, lr: float | None,
            **fields: Any) -> TrainConfig:
    """The training settings, with the data set's defaults where ``None``."""
    kind = "custom" if data.user else data.name if data.name in DEFAULTS else data.kind
    default_epochs, default_batch, default_lr = DEFAULTS.get(kind, DEFAULTS["custom"])
    return TrainConfig(epochs or default_epochs, batch_size or default_batch,
                       default_lr if lr is None else lr, **fields)


def _finish(result: CompareResult, ci: bool, out: Path | None) -> None:
    result.provenance = provenance.finish(result.provenance)
    order = {alpha: k for k, alpha in enumerate(result.alphas)}
    result.runs.sort(key=lambda r: (r.seed, order[r.alpha]))
    if out is not None:
        attach_examples(result.runs, out / PREDICTIONS)
    result.ci = ci
    summarize(result, ci)
    if out is not None:
        from labelsmooth.experiments.report import write_report

        write_report(result, out)


def _execute(result: CompareResult, context: RunContext, todo: list[tuple[float, int]],
             store: RunStore | None, tracker: _Tracker, *, ci: bool, out: Path | None,
             **executor: Any) -> None:
    """Run ``todo``, storing each run as it finishes; on Ctrl-C, write the partial report and re-raise."""
    try:
        for run in _results(context, todo, on_step=tracker.step, **executor):
            if store is not None:
                name = record_name(run.alpha, run.seed)
                write_record(run.run_record, store.path.parent / PREDICTIONS / name)
                store.append(run)
            run.run_record = None
            result.runs.append(run)
            tracker.finished(run)
    except KeyboardInterrupt:
        result.partial = True
        _finish(result, ci, out)
        raise
    _finish(result, ci, out)


def _check_options(*, alphas: Sequence[float], seeds: int, ci: bool, epochs: int | None,
                   batch_size: int | None, model: ModelFactory | None, out: str | os.PathLike[str] | None,
                   resume: bool, overwrite: bool, penultimate_scale: str, device: str,
                   augmentation: tuple[float, str, float | None, float | None],
                   training: dict[str, Any]) -> tuple[list[float], int, Path | None]:
    """Every check that needs no data: the alphas, the seeds, the output folder."""
    checked = options.check_alphas(alphas)
    seeds = options.check_seeds(seeds, ci)
    options.check_positive(epochs, "epochs", optional=True)
    options.check_positive(batch_size, "batch_size", optional=True)
    options.check_training(**training)
    options.check_augmentation(*augmentation)
    options.check_device(device)
    v.check_choice(penultimate_scale, "penultimate_scale", PENULTIMATE_SCALES)
    if model is not None and (not callable(model) or isinstance(model, nn.Module)):
        # A model instance would be shared by every run; a factory gives each run a fresh one.
        raise fail("model", "a callable(num_classes) returning a torch.nn.Module (a factory, not a model)",
                   type(model).__name__)
    out_path = None if out is None else Path(out)
    if out_path is not None:
        check_out(out_path, resume=resume, overwrite=overwrite)
    elif resume:
        raise fail("out", "a folder to resume from (resume=True)", None)
    return checked, seeds, out_path


def _context(data: DataSet, model: ModelFactory | None, config: TrainConfig,
             penultimate: str | None) -> tuple[RunContext, dict[str, Any], tuple[str, ...]]:
    """What every run gets, the settings the store hashes, and the notes for the report."""
    input_shape = tuple(take(data.train, torch.zeros(1, dtype=torch.long))[0].shape[1:])
    factory = model if model is not None else BuiltinModel(data.task, input_shape)
    layer, note, init = probe(factory, data, config, penultimate)
    notes = data.notes + ((f"No penultimate-layer picture: {note}.",) if note else ())
    settings = _settings(data, factory, config, layer, init)
    return RunContext(data, factory, config, layer, settings), settings, notes


def compare(
    dataset: str | os.PathLike[str] | None = None,
    *,
    model: ModelFactory | None = None,
    train: object = None,
    test: object = None,
    val: object = None,
    alphas: Sequence[float] = (0.0, 0.1),
    seeds: int = 3,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float = 0.0,
    optimizer: str | Callable[[Any], torch.optim.Optimizer] = "adamw",
    device: str = "cpu",
    jobs: int = 1,
    executor: str = "local",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    num_classes: int | None = None,
    penultimate: str | None = None,
    ignore_index: int | None = None,
    val_fraction: float = VAL_FRACTION,
    image_size: int = 32,
    threads: int = 1,
    ray_address: str | None = None,
    label_noise: float = 0.0,
    convention: str = "uniform",
    mixup: float | None = None,
    cutmix: float | None = None,
    label_column: str = "label",
    ci: bool = True,
    progress: Callable[[Progress], None] | None = None,
    data: DataSet | None = None,
    penultimate_scale: str = "shared",
) -> CompareResult:
    """Train the same model once per alpha and seed; measure it at T = 1 and after temperature scaling.

    Each run is measured on the test split by every metric of
    :data:`~labelsmooth.experiments.evaluate.METRICS` (accuracy, NLL, ECE,
    smooth ECE, adaptive ECE, classwise ECE, Brier score, AURC; mean IoU for
    segmentation, where every metric is per pixel), once as trained and once
    after temperature scaling: one temperature per run, the NLL minimizer on
    the validation split (Guo et al., 2017), the baseline Müller et al. (2019)
    judge label smoothing against.

    Runs seeds ``0 .. seeds - 1`` for every alpha. The seed is set before
    ``model(num_classes)`` is called, so a given seed gives the same
    initialization, data order and label noise for every alpha, and alphas are
    compared run by run: the summary gives the mean and a 95% Student-t
    interval over seeds, the comparisons the paired difference to the first
    alpha and whether it is inside the noise (its interval contains 0). A run
    whose test accuracy is not above the majority-class rate (one-sided
    binomial test at 1%), or whose training loss became non-finite or ended
    above its first epoch's, did not learn; its comparisons are
    ``"not comparable: a run did not learn"``.

    Args:
        dataset: ``"digits"`` (the default), ``"shapes"``, ``"mnist1d"`` (the
            ``mnist1d`` extra), a folder of class subfolders or a
            ``.csv``/``.parquet`` table (label in ``label_column``).
        model: ``callable(num_classes) -> nn.Module`` returning logits
            ``(N, C)`` (classification) or ``(N, C, H, W)`` (segmentation);
            ``None``: a small built-in network for the data.
        train, test, val: torch Datasets of ``(input, label)`` pairs instead of
            ``dataset``; labels of shape ``()`` mean classification, ``(H, W)``
            segmentation (Dice + cross-entropy). ``val=None`` holds out
            ``val_fraction`` of ``train``.
        alphas: smoothing values in [0, 1]; the first is the baseline.
        seeds: number of seeds (at least 2 when ``ci``).
        epochs, batch_size, lr: ``None`` picks the data set's defaults (the
            user's own Datasets: 10 epochs, batches of 64, lr 1e-3).
        weight_decay, optimizer: ``"adamw"``, ``"adam"``, ``"sgd"`` (momentum
            0.9) or ``callable(params) -> torch.optim.Optimizer``.
        device: a torch device this machine has.
        jobs: local worker processes (results bit-identical to ``jobs=1``).
        executor: ``"local"`` or ``"ray"`` (one task per run; ``ray_address``
            joins a cluster, ``None`` starts a local one).
        out: if given, ``runs.jsonl`` (appended as each run finishes),
            ``metrics.json``, ``report.md`` and four figures, each as PNG
            (150 dpi) and SVG: ``reliability``, ``metrics_vs_alpha``,
            ``curves`` and ``penultimate``; a folder that holds
            files needs ``resume`` (skip finished runs; the settings must be
            the same) or ``overwrite``.
        num_classes: default: the largest label plus one.
        penultimate: the name of the layer whose input is the penultimate
            layer (default: the last ``nn.Linear`` or 1x1 ``nn.Conv2d``).
        ignore_index: a label value left out of training and evaluation.
        val_fraction: share of ``train`` held out when ``val`` is ``None``
            (with 0 and no ``val``: no temperature scaling, its values ``None``).
        image_size: side of the square images a folder is resized to.
        threads: torch threads per run.
        label_noise: fraction of training labels moved to another class.
        convention: ``"uniform"`` or ``"others"``; see :func:`labelsmooth.smooth_labels`.
        mixup, cutmix: Beta concentration of :class:`~labelsmooth.MixUp` /
            :class:`~labelsmooth.CutMix` added to every run (``None``: off);
            CutMix needs image data.
        ci: compute 95% confidence intervals.
        progress: called with a :class:`Progress` after every optimizer step
            (runs in this process) and every finished run.
        data: an already loaded :class:`DataSet` (overrides ``dataset``).
        penultimate_scale: ``"shared"`` (every penultimate-layer panel on one
            scale) or ``"own"``.

    Returns:
        A :class:`CompareResult`; ``result.to_dict()`` is ``metrics.json``.
        Ctrl-C writes the finished runs' report (marked partial) and re-raises.
    """
    call = call_text(locals(), _DEFAULTS)
    checked, seeds, out_path = _check_options(
        alphas=alphas, seeds=seeds, ci=ci, epochs=epochs, batch_size=batch_size, model=model, out=out,
        resume=resume, overwrite=overwrite, penultimate_scale=penultimate_scale, device=device,
        augmentation=(label_noise, convention, mixup, cutmix),
        training={"lr": lr, "weight_decay": weight_decay, "optimizer": optimizer,
                  "val_fraction": val_fraction, "image_size": image_size, "jobs": jobs, "executor": executor,
                  "threads": threads})
    started = provenance.start(call, device)
    loaded = load(dataset, train=train, test=test, val=val, data=data, num_classes=num_classes,
                  ignore_index=ignore_index, val_fraction=val_fraction, label_column=label_column,
                  image_size=image_size)
    if cutmix is not None and loaded.kind != "image":
        raise fail("cutmix", "image data (CutMix pastes a box of pixels)", f"a {loaded.kind} data set")
    config = _config(loaded, epochs=epochs, batch_size=batch_size, lr=lr, convention=convention,
                     label_noise=float(label_noise), device=device, mixup=mixup, cutmix=cutmix,
                     weight_decay=float(weight_decay), optimizer=optimizer, threads=threads)
    context, settings, notes = _context(loaded, model, config, penultimate)
    if executor == "local" and jobs > 1:
        check_picklable(context)
    store, done = RunStore.open(out_path, settings, resume=resume) if out_path is not None else (None, [])
    todo, finished = _grid(checked, seeds, done)
    result = CompareResult(loaded.name, loaded.task, loaded.num_classes, loaded.class_names, checked,
                           list(range(seeds)), config, finished, settings=settings, notes=notes,
                           provenance=started, penultimate_scale=penultimate_scale)
    in_process = executor == "local" and (jobs == 1 or len(todo) <= 1)
    steps = config.epochs * -(-size(loaded.train) // config.batch_size)
    tracker = _Tracker(progress, len(todo), steps * len(todo) if in_process else 0)
    _execute(result, context, todo, store, tracker, ci=ci, out=out_path,
             jobs=jobs, executor=executor, ray_address=ray_address)
    return result


#: ``compare``'s defaults, for the Python call the report shows.
_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(compare).parameters.items()}

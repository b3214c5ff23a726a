"""``compare``: train the same model once per alpha and seed, evaluate, summarize.

It is made of four parts: the data and the model factory (the user's, or
the built-in ones), :func:`~labelsmooth.experiments.run.execute` (one run,
a pure function), an executor (:mod:`.executors`) and the run store
(:mod:`.store`), from which the summary and the report are derived.
"""

from __future__ import annotations

import contextlib
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

from labelsmooth.experiments import provenance
from labelsmooth.experiments._analysis import attach_examples, summarize
from labelsmooth.experiments._config import DEFAULTS, PER_DATASET, CompareConfig
from labelsmooth.experiments._records import PREDICTIONS, record_name, write_record
from labelsmooth.experiments._results import CompareResult, RunResult
from labelsmooth.experiments._store import RunStore
from labelsmooth.experiments._warnings import absent_classes, probabilities, undertrained
from labelsmooth.experiments.data import (
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
from labelsmooth.experiments.train import ModelFactory, TrainConfig, deterministic, seed_everything

__all__ = ["Progress", "compare", "load", "probe"]

@dataclass(frozen=True)
class Progress:
    """Where a comparison stands, handed to ``compare``'s ``progress`` callback.

    ``steps_done``/``steps_total`` count optimizer steps of the runs in this
    process (0 with worker processes or Ray); ``finished`` is the run that just
    ended, if one did; ``run_seconds`` the wall time of each finished run, and
    ``workers`` how many runs go at once.
    """

    runs_done: int
    runs_total: int
    steps_done: int
    steps_total: int
    elapsed: float
    description: str
    finished: RunResult | None = None
    run_seconds: tuple[float, ...] = ()
    workers: int = 1

    @property
    def eta(self) -> float | None:
        """Seconds left: the mean time of a finished run times the runs left per worker (``None`` before
        the first run ends).

        Not the elapsed time per finished run: with ``workers`` runs going at
        once, the first one ends when the others are nearly done too, and that
        rate would put the end ``workers`` times too far.
        """
        if self.runs_done == 0:
            return None
        per_run = sum(self.run_seconds) / len(self.run_seconds) if self.run_seconds else \
            self.elapsed / self.runs_done
        return per_run * (self.runs_total - self.runs_done) / self.workers


def load(dataset: str | os.PathLike[str] | None = None, *, train: object = None, test: object = None,
         val: object = None, data: DataSet | None = None, num_classes: int | None = None,
         ignore_index: int | None = None, val_fraction: float = DEFAULTS["val_fraction"],
         label_column: str = DEFAULTS["label_column"], image_size: int = DEFAULTS["image_size"]) -> DataSet:
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
          penultimate: str | None) -> tuple[str | None, str, str, str | None]:
    """Build the model once (seed 0) and check it fits the data, before any run starts.

    Returns the penultimate layer's name (or ``None``), a note when there is
    none, a hash of the model (part of the settings' hash: :func:`model_hash`)
    and a warning when its outputs are already probabilities.
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
    return layer, note, model_hash(model), probabilities(logits)


def model_hash(model: nn.Module) -> str:
    """A hash of what defines the model's computation: every module's name, type and settings (its
    ``extra_repr``), the source of the ``forward`` of the user's own module classes, and the weights.

    The weights alone miss a change of a parameter-free module (``ReLU`` to ``Tanh``).
    """
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        kind = type(module)
        digest.update(f"{name}:{kind.__module__}.{kind.__qualname__}({module.extra_repr()})".encode())
        if not kind.__module__.startswith("torch."):
            # No source where none is kept (a REPL, a compiled module): the types and weights still count.
            with contextlib.suppress(OSError, TypeError):
                digest.update(inspect.getsource(kind.forward).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()[:16]


def _settings(data: DataSet, factory: ModelFactory, config: TrainConfig, layer: str | None,
              init: str) -> dict[str, Any]:
    """Everything that changes a run's result (not the grid, the executor or the number of jobs)."""
    return {
        "dataset": data.name, "data_fingerprint": data.fingerprint, "task": data.task,
        "num_classes": data.num_classes, "ignore_index": data.ignore_index,
        "model": _identity(factory), "model_hash": init, "penultimate": layer,
        "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "weight_decay": config.weight_decay, "optimizer": _identity(config.optimizer),
        "convention": config.convention, "label_noise": config.label_noise, "mixup": config.mixup,
        "cutmix": config.cutmix, "device": config.device, "threads": config.threads,
        "warmup_epochs": config.warmup_epochs,
        # What each run measures: a store written before temperature scaling or early stopping cannot be
        # resumed.
        "measured": [*metric_names(data.task), "temperature", "early_stopping"],
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
    workers: int = 1
    started: float = field(default_factory=time.perf_counter)
    runs_done: int = 0
    steps_done: int = 0
    description: str = ""
    seconds: list[float] = field(default_factory=list)

    def _tell(self, finished: RunResult | None = None) -> None:
        if self.callback is not None:
            self.callback(Progress(self.runs_done, self.runs_total, self.steps_done, self.steps_total,
                                   time.perf_counter() - self.started, self.description, finished,
                                   tuple(self.seconds), self.workers))

    def step(self) -> None:
        self.steps_done += 1
        self._tell()

    def finished(self, result: RunResult) -> None:
        self.runs_done += 1
        self.seconds.append(result.seconds)
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


def _train_config(data: DataSet, options: CompareConfig) -> TrainConfig:
    """The training settings, with the data set's defaults (:data:`~._config.PER_DATASET`) where ``None``."""
    kind = "custom" if data.user else data.name if data.name in PER_DATASET else data.kind
    epochs, batch_size, lr = PER_DATASET.get(kind, PER_DATASET["custom"])
    return TrainConfig(
        options.epochs or epochs, options.batch_size or batch_size, lr if options.lr is None else options.lr,
        convention=options.convention, label_noise=float(options.label_noise), device=options.device,
        mixup=options.mixup, cutmix=options.cutmix, weight_decay=float(options.weight_decay),
        optimizer=options.optimizer, threads=options.threads, allow_negative=options.allow_negative,
        warmup_epochs=options.warmup_epochs)


def _finish(result: CompareResult, ci: bool, out: Path | None) -> None:
    result.provenance = provenance.finish(result.provenance)
    order = {alpha: k for k, alpha in enumerate(result.alphas)}
    result.runs.sort(key=lambda r: (r.seed, order[r.alpha]))
    if out is not None:
        attach_examples(result.runs, out / PREDICTIONS)
    result.ci = ci
    summarize(result, ci)
    late = undertrained(result.runs)
    if late is not None:
        result.warnings = (*result.warnings, late)
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


def _context(data: DataSet, model: ModelFactory | None, config: TrainConfig,
             penultimate: str | None) -> tuple[RunContext, dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """What every run gets, the settings the store hashes, the notes and the warnings for the report."""
    input_shape = tuple(take(data.train, torch.zeros(1, dtype=torch.long))[0].shape[1:])
    factory = model if model is not None else BuiltinModel(data.task, input_shape)
    layer, note, init, outputs = probe(factory, data, config, penultimate)
    first = 1 if data.task == "segmentation" else 0  # the picture skips the background class
    if layer is not None and data.num_classes - first < 3:
        layer, note = None, (f"it shows three classes, and this task has {data.num_classes - first}"
                             + (" besides the background" if first else ""))
    notes = data.notes + ((f"No penultimate-layer picture: {note}.",) if note else ())
    warnings = tuple(w for w in (absent_classes(data), outputs) if w is not None)
    settings = _settings(data, factory, config, layer, init)
    return RunContext(data, factory, config, layer, settings), settings, notes, warnings


def compare(
    dataset: str | os.PathLike[str] | None = None,
    *,
    model: ModelFactory | None = None,
    train: object = None,
    test: object = None,
    val: object = None,
    data: DataSet | None = None,
    progress: Callable[[Progress], None] | None = None,
    alphas: Sequence[float] = DEFAULTS["alphas"],
    seeds: int = DEFAULTS["seeds"],
    epochs: int | None = DEFAULTS["epochs"],
    batch_size: int | None = DEFAULTS["batch_size"],
    lr: float | None = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    optimizer: str | Callable[[Any], torch.optim.Optimizer] = DEFAULTS["optimizer"],
    device: str = DEFAULTS["device"],
    jobs: int = DEFAULTS["jobs"],
    executor: str = DEFAULTS["executor"],
    out: str | os.PathLike[str] | None = DEFAULTS["out"],
    resume: bool = DEFAULTS["resume"],
    overwrite: bool = DEFAULTS["overwrite"],
    num_classes: int | None = DEFAULTS["num_classes"],
    penultimate: str | None = DEFAULTS["penultimate"],
    ignore_index: int | None = DEFAULTS["ignore_index"],
    val_fraction: float = DEFAULTS["val_fraction"],
    image_size: int = DEFAULTS["image_size"],
    threads: int = DEFAULTS["threads"],
    ray_address: str | None = DEFAULTS["ray_address"],
    label_noise: float = DEFAULTS["label_noise"],
    convention: str = DEFAULTS["convention"],
    mixup: float | None = DEFAULTS["mixup"],
    cutmix: float | None = DEFAULTS["cutmix"],
    label_column: str = DEFAULTS["label_column"],
    ci: bool = DEFAULTS["ci"],
    penultimate_scale: str = DEFAULTS["penultimate_scale"],
    allow_negative: bool = DEFAULTS["allow_negative"],
    warmup_epochs: int = DEFAULTS["warmup_epochs"],
) -> CompareResult:
    """Train the same model once per alpha and seed; measure it at T = 1 and after temperature scaling.

    Each run is measured on the test split by every metric of
    :data:`~labelsmooth.experiments.evaluate.METRICS` (accuracy, NLL, ECE,
    smooth ECE, adaptive ECE, classwise ECE, Brier score, AURC; mean IoU for
    segmentation, where every metric is per pixel), once as trained and once
    after temperature scaling: one temperature per run, the NLL minimizer on
    the validation split (Guo et al., 2017), the baseline Müller et al. (2019)
    judge label smoothing against. Each run also keeps the weights of its
    epoch with the lowest validation NLL and is measured with them too, raw
    and temperature-scaled (``best_epoch``, ``{metric}_es``,
    ``{metric}_es_ts``): early stopping, the free alternative to smoothing
    under label noise; the comparisons pair the alphas at either checkpoint
    and each alpha at its final epoch against the early-stopped baseline.

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
        alphas: smoothing values in [0, 1] (in [-1, 1] with ``allow_negative``);
            the first is the baseline.
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
            (with 0 and no ``val``: no temperature scaling and no early
            stopping, their values ``None``).
        image_size: side of the square images a folder is resized to.
        threads: torch threads per run (and per worker process).
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
        allow_negative: accept alphas in [-1, 0) (negative label smoothing,
            Wei et al., 2022; classification only: Dice takes no negative
            target); passed to ``LabelSmoothing`` and the training loss.
        warmup_epochs: every alpha starts after this many epochs of plain
            cross-entropy (:class:`labelsmooth.schedules.Delayed`), the warm-up
            Wei et al. run before negative smoothing; below ``epochs``.

    Every option's default and check live in
    :class:`~labelsmooth.experiments.CompareConfig`.

    Returns:
        A :class:`CompareResult`; ``result.to_dict()`` is ``metrics.json``.
        Ctrl-C writes the finished runs' report (marked partial) and re-raises.
    """
    inputs = {"dataset": dataset, "model": model, "train": train, "test": test, "val": val, "data": data,
              "progress": progress}
    arguments = locals()
    call = call_text(arguments, _DEFAULTS)
    options = CompareConfig(**{name: arguments[name] for name in DEFAULTS})
    if model is not None and (not callable(model) or isinstance(model, nn.Module)):
        # A model instance would be shared by every run; a factory gives each run a fresh one.
        raise fail("model", "a callable(num_classes) returning a torch.nn.Module (a factory, not a model)",
                   type(model).__name__)
    return _run(options, inputs, provenance.start(call, options.device))


def _run(options: CompareConfig, inputs: dict[str, Any], started: dict[str, Any]) -> CompareResult:
    """The comparison of checked ``options`` on ``inputs`` (the data, the model, the progress callback)."""
    loaded = load(inputs["dataset"], train=inputs["train"], test=inputs["test"], val=inputs["val"],
                  data=inputs["data"], num_classes=options.num_classes, ignore_index=options.ignore_index,
                  val_fraction=options.val_fraction, label_column=options.label_column,
                  image_size=options.image_size)
    _check_fit(options, loaded)
    config = _train_config(loaded, options)
    context, settings, notes, warnings = _context(loaded, inputs["model"], config, options.penultimate)
    if options.executor == "local" and options.jobs > 1:
        check_picklable(context)
    out = options.out
    store, done = RunStore.open(out, settings, resume=options.resume) if out is not None else (None, [])
    todo, finished = _grid(list(options.alphas), options.seeds, done)
    result = CompareResult(loaded.name, loaded.task, loaded.num_classes, loaded.class_names,
                           list(options.alphas), list(range(options.seeds)), config, finished,
                           settings=settings, notes=notes, provenance=started,
                           penultimate_scale=options.penultimate_scale, warnings=warnings)
    workers = 1 if options.executor == "local" and options.jobs == 1 else options.jobs
    in_process = options.executor == "local" and (options.jobs == 1 or len(todo) <= 1)
    steps = config.epochs * -(-size(loaded.train) // config.batch_size)
    tracker = _Tracker(inputs["progress"], len(todo), steps * len(todo) if in_process else 0,
                       workers=min(workers, max(len(todo), 1)))
    _execute(result, context, todo, store, tracker, ci=options.ci, out=out, jobs=options.jobs,
             executor=options.executor, ray_address=options.ray_address)
    return result


def _check_fit(options: CompareConfig, data: DataSet) -> None:
    """The options that depend on the data: CutMix needs images, Dice takes no negative alpha."""
    if options.cutmix is not None and data.kind != "image":
        raise fail("cutmix", "image data (CutMix pastes a box of pixels)", f"a {data.kind} data set")
    negative = [a for a in options.alphas if a < 0]
    if negative and data.task == "segmentation":
        # Dice's soft counts assume targets in [0, 1]; a negative entry makes its ratio meaningless.
        raise fail("alphas", "alphas >= 0 for segmentation (Dice + cross-entropy takes no negative "
                   "smoothing)", negative[0])


#: ``compare``'s defaults, for the Python call the report shows.
_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(compare).parameters.items()}

"""The click commands behind ``labelsmooth`` (:mod:`labelsmooth.cli` is the entry point).

Argument parsing and printing only; the work is in :mod:`labelsmooth.experiments`.
Imported only once :func:`labelsmooth.cli.main` has checked that the ``cli``
extra is installed.
"""

from __future__ import annotations

import math
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from labelsmooth._lazy import uninterrupted
from labelsmooth.experiments._config import CONVENTIONS, DEFAULTS, OPTIMIZERS, PENULTIMATE_SCALES

DEFAULT_OUT = "runs/compare"
#: Exit status when a run crashed (``--debug`` shows the traceback).
RUN_FAILED = 1
#: Exit status when every run of some alpha did not learn: its numbers say nothing about smoothing.
NOT_LEARNED = 3
#: What ``compare --runs`` writes (no store, no records: it reads them).
REPORT_NAMES = ("metrics.json", "report.md", "the figures")


class UsageError(Exception):
    """Bad input found by the command itself; printed as one line by :func:`labelsmooth.cli.main`."""

    @classmethod
    def of(cls, arg: str, expected: str, got: object) -> UsageError:
        """The error for ``arg`` in the library's one wording (:func:`labelsmooth._validation.fail`)."""
        from labelsmooth import _validation as v

        return cls(str(v.fail(arg, expected, got)))


def _parse_alphas(text: str) -> list[float]:
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    alphas = []
    for token in tokens:
        try:
            alphas.append(float(token))
        except ValueError:
            raise UsageError.of("alphas", "numbers in [0, 1]", token) from None
    if not alphas:
        raise UsageError.of("alphas", "at least one number in [0, 1]", text)
    return alphas


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labelsmooth")
def cli() -> None:
    """Label smoothing for PyTorch: check whether it helps your model, and what it does to the targets."""


OPTIONS = [
    click.option("--dataset", default=None,
                 help="'digits' [default], 'shapes', 'mnist1d' (the mnist1d extra), a folder of images in "
                      "class subfolders, or a .csv/.parquet table."),
    click.option("--model", default=None, metavar="PKG.MODULE:FACTORY",
                 help="Your model: factory(num_classes) -> nn.Module returning logits [default: a small "
                      "built-in network]."),
    click.option("--data", default=None, metavar="PKG.MODULE:LOADER",
                 help="Your data: loader() -> (train, test) or (train, val, test) torch Datasets of "
                      "(input, label)."),
    click.option("--alphas", default=" ".join(f"{a:g}" for a in DEFAULTS["alphas"]), show_default=True,
                 help="Smoothing values in [0, 1] (in [-1, 1] with --allow-negative), e.g. --alphas 0 0.1 "
                      "0.2; the first is the baseline."),
    click.option("--allow-negative", is_flag=True, default=DEFAULTS["allow_negative"],
                 help="Accept negative alphas: negative label smoothing (Wei et al., ICML 2022); "
                      "classification only."),
    click.option("--warmup-epochs", default=DEFAULTS["warmup_epochs"], show_default=True, type=int,
                 help="Epochs of plain cross-entropy before every alpha starts (Wei et al.'s warm-up before "
                      "negative smoothing)."),
    click.option("--seeds", default=DEFAULTS["seeds"], show_default=True, type=int,
                 help="Run seeds 0 .. N-1 for every alpha."),
    click.option("--epochs", default=None, type=int, help="Training epochs [default: per data set]."),
    click.option("--batch-size", default=None, type=int, help="Batch size [default: per data set]."),
    click.option("--lr", default=None, type=float, help="Learning rate [default: per data set]."),
    click.option("--weight-decay", default=DEFAULTS["weight_decay"], show_default=True, type=float,
                 help="Weight decay."),
    click.option("--optimizer", default=DEFAULTS["optimizer"], show_default=True,
                 type=click.Choice(OPTIMIZERS), help="Optimizer (sgd: momentum 0.9)."),
    click.option("--val-fraction", default=DEFAULTS["val_fraction"], show_default=True, type=float,
                 help="Share of the training split held out for the validation curves (when the data has no "
                      "validation split)."),
    click.option("--image-size", default=DEFAULTS["image_size"], show_default=True, type=int,
                 help="Side of the square images a folder is resized to."),
    click.option("--num-classes", default=None, type=int,
                 help="Number of classes [default: from the labels]."),
    click.option("--ignore-index", default=None, type=int,
                 help="A label value left out of training and evaluation (e.g. 255 on segmentation "
                      "borders)."),
    click.option("--penultimate", default=None, metavar="MODULE.NAME",
                 help="The layer whose input is the penultimate layer [default: the last nn.Linear or 1x1 "
                      "nn.Conv2d]."),
    click.option("--label-noise", default=DEFAULTS["label_noise"], show_default=True, type=float,
                 help="Fraction of training labels moved to another class."),
    click.option("--convention", default=DEFAULTS["convention"], show_default=True,
                 type=click.Choice(CONVENTIONS),
                 help="'uniform': alpha/C to every class; 'others': 1-alpha stays on the true class."),
    click.option("--mixup", default=None, type=float, metavar="CONCENTRATION",
                 help="Add MixUp with this Beta concentration (e.g. 0.2) to every run."),
    click.option("--cutmix", default=None, type=float, metavar="CONCENTRATION",
                 help="Add CutMix with this Beta concentration (e.g. 1.0) to every run; image data only."),
    click.option("--label-column", default=DEFAULTS["label_column"], show_default=True,
                 help="The class column of a table."),
    click.option("--penultimate-scale", default=DEFAULTS["penultimate_scale"], show_default=True,
                 type=click.Choice(PENULTIMATE_SCALES),
                 help="penultimate.png: every panel on one scale, or each on its own."),
    click.option("--ci/--no-ci", default=DEFAULTS["ci"], show_default=True,
                 help="95% confidence intervals over seeds (needs at least 2 seeds)."),
    click.option("--device", default=DEFAULTS["device"], show_default=True, help="Torch device."),
    click.option("--threads", default=DEFAULTS["threads"], show_default=True, type=int,
                 help="Torch threads per run (and per --jobs worker)."),
    click.option("--jobs", default=DEFAULTS["jobs"], show_default=True, type=int,
                 help="Local worker processes (results identical to --jobs 1)."),
    click.option("--ray", default=None, is_flag=False, flag_value="local", metavar="[ADDRESS]",
                 help="Run every (alpha, seed) as a Ray task: on the cluster at ADDRESS, or a local one."),
    click.option("--resume", is_flag=True, default=DEFAULTS["resume"],
                 help="Skip the runs --out already holds (same settings only)."),
    click.option("--overwrite", is_flag=True, default=DEFAULTS["overwrite"],
                 help="Replace the results --out holds."),
    click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(path_type=Path),
                 help="Folder for runs.jsonl, predictions/ (one record per run), metrics.json, the pictures "
                      "and report.md."),
    click.option("--runs", multiple=True, metavar="PATH [PATH ...]",
                 help="Compare saved run records instead of training: folders, globs or .npz/.pt files "
                      "(see the README's 'Run records'); --out, --ci/--no-ci and --overwrite apply."),
    click.option("--allow-different-settings", is_flag=True,
                 help="With --runs: compare records whose settings differ (noted in the report)."),
    click.option("--debug", is_flag=True, help="Show the traceback of a run that crashed."),
]
#: The options that mean something with --runs; any other one given with it is refused.
RUNS_OPTIONS = ("runs", "out", "ci", "overwrite", "allow_different_settings", "debug")


def _with_options(function: Any) -> Any:
    for option in reversed(OPTIONS):
        function = option(function)
    return function


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


class _Progress:
    """``compare``'s progress: a tqdm bar on a terminal; off one, a line per finished run.

    ``header`` (what data, which notes) is printed when training starts: input
    that turns out bad before then leaves nothing but the one error line.
    """

    def __init__(self) -> None:
        self.bar: Any = None
        self.started = False
        self.terminal = sys.stderr.isatty()
        self.header: list[str] = []

    def start(self) -> None:
        if not self.started:
            self.started = True
            for line in self.header:
                click.echo(line, err=True)

    def __call__(self, progress: Any) -> None:
        self.start()
        if self.terminal:
            self._bar(progress)
        elif progress.finished is not None:
            click.echo(self._line(progress), err=True)

    def _bar(self, progress: Any) -> None:
        from tqdm import tqdm

        steps = progress.steps_total > 0
        if self.bar is None:
            total = progress.steps_total if steps else progress.runs_total
            self.bar = tqdm(total=total, unit="step" if steps else "run", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_description(progress.description, refresh=False)
        self.bar.update((progress.steps_done if steps else progress.runs_done) - self.bar.n)

    @staticmethod
    def _line(progress: Any) -> str:
        from labelsmooth.experiments.evaluate import METRICS
        from labelsmooth.experiments.report import number

        run = progress.finished
        shown = []
        for name, value in run.metrics.items():
            metric = METRICS[name]
            shown.append(f"{metric.label} " + (f"{number(value * 100, '.1f')}%" if metric.percent
                                                else number(value, ".3f")))
        eta = "" if progress.eta is None else f", ETA {_duration(progress.eta)}"
        learned = "" if run.learned else " (did not learn)"
        return (f"run {progress.runs_done}/{progress.runs_total} alpha={run.alpha:g} seed={run.seed}: "
                f"{', '.join(shown)}{learned}; {_duration(progress.elapsed)} elapsed{eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _user_data(config: Any, dataset: str | None, spec: str | None) -> Any:
    """The prepared data set: ``--data``'s loader, or ``--dataset`` (digits by default)."""
    from labelsmooth.experiments._compare import load
    from labelsmooth.experiments.data import from_datasets
    from labelsmooth.experiments.imports import load_splits

    if spec is not None and dataset is not None:
        raise UsageError.of("data", "either --data or --dataset, not both", spec)
    if spec is not None:
        train, val, test = load_splits(spec)
        return from_datasets(train, test, val, num_classes=config.num_classes,
                             ignore_index=config.ignore_index, val_fraction=config.val_fraction, name=spec)
    return load(dataset, val_fraction=config.val_fraction, label_column=config.label_column,
                image_size=config.image_size)


def _plan(opts: dict[str, Any], progress: _Progress) -> tuple[Any, dict[str, Any]]:
    """Check the options (:class:`~labelsmooth.experiments.CompareConfig`, in the command's spelling) and
    load the model and the data; return the config and ``compare``'s inputs."""
    from labelsmooth.experiments._config import CompareConfig
    from labelsmooth.experiments.imports import load_object

    ray = opts.pop("ray")
    dataset, model_spec, data_spec = opts.pop("dataset"), opts.pop("model"), opts.pop("data")
    config = CompareConfig(**{**opts, "alphas": _parse_alphas(opts["alphas"])}, cli=True,
                           executor="local" if ray is None else "ray",
                           ray_address=None if ray in (None, "local") else ray)
    model = None if model_spec is None else load_object(model_spec, "model")
    data = _user_data(config, dataset, data_spec)
    validation = 0 if data.val is None else len(data.val)
    progress.header = [f"{data.name}: {data.task}, {data.num_classes} classes, {len(data.train)} train / "
                       f"{validation} validation / {len(data.test)} test examples",
                       *(f"note: {note}" for note in data.notes)]
    return config, {"model": model, "data": data}


def _interrupted(out: Path) -> None:
    from labelsmooth.experiments._store import STORE

    if (out / "report.md").exists():
        click.echo(f"labelsmooth: interrupted; the finished runs are in {out / STORE} and a partial report "
                   f"in {out / 'report.md'}; --resume runs the rest", err=True)
    else:
        click.echo("labelsmooth: interrupted before any run started; nothing was written", err=True)
    raise click.exceptions.Exit(130)


def _compare_records(opts: dict[str, Any]) -> None:
    """``compare --runs``: the analysis of saved records, no training."""
    from labelsmooth.experiments import compare_runs

    context = click.get_current_context()
    given = [name for name in opts if name not in RUNS_OPTIONS
             and context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise UsageError.of("runs", "no training options with --runs",
                            "--" + given[0].replace("_", "-"))
    try:
        result = compare_runs(list(opts["runs"]), out=opts["out"], ci=opts["ci"],
                              allow_different_settings=opts["allow_different_settings"],
                              overwrite=opts["overwrite"])
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    _print_result(result)
    click.echo(f"read {len(result.runs)} records; wrote {', '.join(REPORT_NAMES)} to {opts['out']}", err=True)


@cli.command()
@_with_options
def compare(**opts: Any) -> int:
    """Train the same model once per alpha and seed (or read saved runs: --runs); compare accuracy, NLL and
    calibration, at T = 1 and after temperature scaling.

    Exit status: 0; 1 when a run crashed (one line; --debug shows the traceback); 2 on bad input (nothing
    written); 3 when no run of some alpha learned; 130 when interrupted."""
    debug = opts.pop("debug")
    if opts["runs"]:
        _compare_records(opts)
        return 0
    opts.pop("runs")
    opts.pop("allow_different_settings")
    with uninterrupted():
        from labelsmooth.experiments import compare as run_compare
        from labelsmooth.experiments._results import RunError

    progress = _Progress()
    try:
        config, inputs = _plan(opts, progress)
        result = run_compare(**config.options(), **inputs, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        _interrupted(opts["out"])
    except RunError as error:
        progress.close()
        if debug:
            traceback.print_exception(error.__cause__ or error, file=sys.stderr)
        click.echo(f"labelsmooth: error: {error}".splitlines()[0], err=True)
        return RUN_FAILED
    except (ValueError, TypeError) as error:
        progress.close()
        if progress.started:  # raised after training started, not by the input: keep the traceback
            raise
        raise UsageError(str(error)) from None
    progress.start()
    progress.close()
    _print_result(result, skip_notes=len(inputs["data"].notes))
    files = ", ".join(_report_files(result))
    click.echo(f"wrote {opts['out'] / 'runs.jsonl'}, predictions/, {files}", err=True)
    return NOT_LEARNED if _alpha_without_learning(result) else 0


def _print_result(result: Any, *, skip_notes: int = 0) -> None:
    """The notes and warnings the user has not seen yet, the table, the noise sentences and the answer
    against early stopping."""
    from labelsmooth.experiments.report import early_stopping_answer, format_table, noise_statement, warning

    for note in result.notes[skip_notes:]:
        click.echo(f"note: {note}", err=True)
    for text in (warning(result), *result.warnings):
        if text is not None:
            click.echo(f"labelsmooth: warning: {text}", err=True)
    click.echo(format_table(result))
    click.echo("\n".join(noise_statement(result)))
    click.echo("\n".join(early_stopping_answer(result)))


def _alpha_without_learning(result: Any) -> bool:
    """Whether some alpha has runs and none of them learned (exit status :data:`NOT_LEARNED`)."""
    return any(runs and not any(r.learned for r in runs) for runs in map(result.runs_of, result.alphas))


def _report_files(result: Any) -> list[str]:
    from labelsmooth.experiments._figures import figure_names

    return ["metrics.json", *(f"{name}.{kind}" for name in figure_names(result) for kind in ("png", "svg")),
            "report.md"]


@cli.command()
@click.option("--alpha", default=0.1, show_default=True, type=float,
              help="Smoothing mass in [0, 1] (in [-1, 1] with --allow-negative).")
@click.option("--classes", default=1000, show_default=True, type=int, help="Number of classes C (>= 2).")
@click.option("--convention", default="uniform", show_default=True, type=click.Choice(CONVENTIONS),
              help="The convention --alpha is given in.")
@click.option("--allow-negative", is_flag=True,
              help="Accept a negative --alpha: negative label smoothing (Wei et al., ICML 2022).")
def explain(alpha: float, classes: int, convention: str, allow_negative: bool) -> None:
    """Print the smoothed target under both conventions, the conversion and the loss floor."""
    from labelsmooth import _validation as v

    try:
        alpha = v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    except ValueError as error:
        raise UsageError(str(error).replace("allow_negative=True", "--allow-negative")) from None
    if classes < 2:
        raise UsageError.of("classes", "an int >= 2", classes)
    other = "others" if convention == "uniform" else "uniform"
    # "others" alpha a equals "uniform" alpha a * C / (C - 1).
    factor = classes / (classes - 1) if convention == "others" else (classes - 1) / classes
    equivalent = alpha * factor
    click.echo(f"alpha = {alpha:g} over C = {classes} classes, given in the '{convention}' convention\n")
    click.echo(f"{'convention':<10} {'alpha':>10} {'true class':>12} {'each other':>12} {'loss floor':>14}")
    # The first two rows show the usual mistake (the same number, read in the other
    # convention, is a different target); the third is the same target, converted.
    rows = ((convention, alpha, "as given"), (other, alpha, "same alpha, other convention"),
            (other, equivalent, "same target, converted"))
    low = -1.0 if allow_negative else 0.0
    for name, value, note in rows:
        if not low <= value <= 1:
            click.echo(f"{name:<10} {value:>10.6g}   (outside [{low:g}, 1]: not expressible in this "
                       f"convention)  {note}")
            continue
        click.echo(_explain_row(name, value, classes, note))
    click.echo(f"\nconversion: 'others' alpha a = 'uniform' alpha a * C / (C - 1); here {convention} "
               f"{alpha:g} = {other} {equivalent:.6g}")
    if alpha < 0:
        click.echo("loss floor: minus infinity. A negative alpha gives every other class a negative "
                   "target entry,\nso the loss goes to minus infinity as any of their probabilities goes "
                   "to 0. Wei et al. use it only\nafter a warm-up with plain cross-entropy; choose "
                   "checkpoints on validation data, never on the test set.")
        return
    click.echo("loss floor: the lowest loss a model can reach on smoothed targets is their entropy, "
               "so a training loss that stays near it is not a bug.")
    if alpha > 0:
        click.echo(f"(for reference: log C = {math.log(classes):.4f} nats, the loss of a uniform prediction)")


def _explain_row(name: str, value: float, classes: int, note: str) -> str:
    """One row of ``explain``: the target's entries and its loss floor (minus infinity below 0)."""
    import torch

    from labelsmooth.functional import cross_entropy
    from labelsmooth.targets import smooth_labels

    logits = torch.zeros(1, classes, dtype=torch.float64)
    target = torch.zeros(1, dtype=torch.long)
    q = smooth_labels(logits, target, value, convention=name, allow_negative=value < 0)
    floor = "-inf"
    if value >= 0:
        # The floor is the cross-entropy of the target with itself (logits = log q), i.e. its entropy.
        entropy = cross_entropy(q.clamp_min(1e-300).log(), target, alpha=value, convention=name)
        floor = f"{float(entropy):.4f}"
    entries = f"{q[0, 0].item():>12.6g} {q[0, 1].item():>12.6g}"
    return f"{name:<10} {value:>10.6g} {entries} {floor:>9} nats   {note}"

"""The ``labelsmooth`` command: argument parsing and printing only (the work is in ``experiments``).

Needs the ``cli`` extra. Bad input ends with one line on standard error
(``labelsmooth: error: <what is wrong>``) and exit status 2, without a traceback.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch

from labelsmooth import _validation as v

USAGE_ERROR = 2
DEFAULT_OUT = "runs/compare"
#: Options that take several values (``--alphas 0 0.1 0.2``); click takes one, so
#: :func:`main` joins the values that follow into one comma-separated token.
VARIADIC = ("--alphas",)


class UsageError(Exception):
    """Bad input found by the command itself; printed as one line."""


def _parse_alphas(text: str) -> list[float]:
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    alphas = []
    for token in tokens:
        try:
            alphas.append(float(token))
        except ValueError:
            raise UsageError(str(v.fail("alphas", "numbers in [0, 1]", token))) from None
    if not alphas:
        raise UsageError(str(v.fail("alphas", "at least one number in [0, 1]", text)))
    return alphas


def _check_device(device: str) -> str:
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(str(v.fail("device", "a torch device such as 'cpu' or 'cuda'", device))) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(str(v.fail("device", "an available device (no CUDA device found)", device)))
    return device


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(str(v.fail("out", "a directory (or a path to create one)", str(out))))
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(str(v.fail("out", "a directory this user can write", str(out))))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labelsmooth")
def cli() -> None:
    """Label smoothing for PyTorch: check whether it helps your model, and what it does to the targets."""


@cli.command()
@click.option("--dataset", default="digits", show_default=True,
              help="'digits', 'shapes', a folder of images in class subfolders, or a .csv/.parquet table.")
@click.option("--alphas", default="0 0.1", show_default=True,
              help="Smoothing values in [0, 1], e.g. --alphas 0 0.1 0.2; the first is the baseline.")
@click.option("--seeds", default=3, show_default=True, type=int, help="Run seeds 0 .. N-1 for every alpha.")
@click.option("--epochs", default=None, type=int, help="Training epochs [default: per data set].")
@click.option("--label-noise", default=0.0, show_default=True, type=float,
              help="Fraction of training labels moved to another class.")
@click.option("--convention", default="uniform", show_default=True, type=click.Choice(v.CONVENTIONS),
              help="'uniform': alpha/C to every class; 'others': 1-alpha stays on the true class.")
@click.option("--mixup", default=None, type=float, metavar="CONCENTRATION",
              help="Add MixUp with this Beta concentration (e.g. 0.2) to every run.")
@click.option("--cutmix", default=None, type=float, metavar="CONCENTRATION",
              help="Add CutMix with this Beta concentration (e.g. 1.0) to every run; image data only.")
@click.option("--label-column", default="label", show_default=True, help="The class column of a table.")
@click.option("--ci/--no-ci", default=True, show_default=True,
              help="95% confidence intervals over seeds (needs at least 2 seeds).")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option("--out", default=DEFAULT_OUT, show_default=True, type=click.Path(path_type=Path),
              help="Folder for metrics.json, reliability.png, penultimate.png and report.md.")
def compare(dataset: str, alphas: str, seeds: int, epochs: int | None, label_noise: float, convention: str,
            mixup: float | None, cutmix: float | None, label_column: str, ci: bool, device: str,
            out: Path) -> None:
    """Train the same model once per alpha and seed; compare accuracy, NLL, calibration (ECE)."""
    from labelsmooth.experiments import compare as run_compare
    from labelsmooth.experiments.compare import _check_options
    from labelsmooth.experiments.data import load_dataset
    from labelsmooth.experiments.report import format_table, noise_statement

    try:
        checked = _check_options(_parse_alphas(alphas), seeds, ci, epochs, label_noise, convention, mixup,
                                 cutmix)
        _check_device(device)
        _check_out(out)
        data = load_dataset(dataset, label_column=label_column)
        if cutmix is not None and data.kind != "image":
            raise UsageError(str(v.fail("cutmix", "image data (CutMix pastes a box of pixels)", data.kind)))
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    click.echo(f"{data.name}: {data.task}, {data.num_classes} classes, {data.train.inputs.shape[0]} train / "
               f"{data.test.inputs.shape[0]} test examples", err=True)
    bar = _progress_bar()
    try:
        result = run_compare(alphas=checked, seeds=seeds, epochs=epochs, label_noise=label_noise,
                             convention=convention, mixup=mixup, cutmix=cutmix, device=device, ci=ci,
                             data=data, progress=bar.update)
    finally:
        bar.close()
    from labelsmooth.experiments.report import write_report

    try:
        write_report(result, out)
    except OSError as error:
        message = v.fail("out", "a directory this user can write", f"{out} ({error.strerror})")
        raise UsageError(str(message)) from None
    click.echo(format_table(result))
    click.echo("\n".join(noise_statement(result)))
    click.echo(f"wrote {out / 'metrics.json'}, reliability.png, penultimate.png, report.md", err=True)


class _Bar:
    """A tqdm bar driven by ``compare``'s ``progress(step, total, description)`` callback."""

    def __init__(self) -> None:
        self.bar: Any = None

    def update(self, step: int, total: int, description: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, disable=None, dynamic_ncols=True)
        self.bar.set_description(description, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar() -> _Bar:
    return _Bar()


@cli.command()
@click.option("--alpha", default=0.1, show_default=True, type=float, help="Smoothing mass in [0, 1].")
@click.option("--classes", default=1000, show_default=True, type=int, help="Number of classes C (>= 2).")
@click.option("--convention", default="uniform", show_default=True, type=click.Choice(v.CONVENTIONS),
              help="The convention --alpha is given in.")
def explain(alpha: float, classes: int, convention: str) -> None:
    """Print the smoothed target under both conventions, the conversion and the loss floor."""
    from labelsmooth.functional import cross_entropy
    from labelsmooth.targets import smooth_labels

    try:
        alpha = v.check_probability(alpha, "alpha")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if classes < 2:
        raise UsageError(str(v.fail("classes", "an int >= 2", classes)))
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
    for name, value, note in rows:
        logits = torch.zeros(1, classes, dtype=torch.float64)
        target = torch.zeros(1, dtype=torch.long)
        q = smooth_labels(logits, target, value, convention=name) if value <= 1 else None
        if q is None:
            click.echo(f"{name:<10} {value:>10.6g}   (outside [0, 1]: not expressible in this convention)  "
                       f"{note}")
            continue
        # The floor is the cross-entropy of the target with itself (logits = log q), i.e. its entropy.
        floor = float(cross_entropy(q.clamp_min(1e-300).log(), target, alpha=value, convention=name))
        click.echo(f"{name:<10} {value:>10.6g} {q[0, 0].item():>12.6g} {q[0, 1].item():>12.6g} "
                   f"{floor:>9.4f} nats   {note}")
    click.echo(f"\nconversion: 'others' alpha a = 'uniform' alpha a * C / (C - 1); here {convention} "
               f"{alpha:g} = {other} {equivalent:.6g}")
    click.echo("loss floor: the lowest loss a model can reach on smoothed targets is their entropy, "
               "so a training loss that stays near it is not a bug.")
    if alpha > 0:
        click.echo(f"(for reference: log C = {math.log(classes):.4f} nats, the loss of a uniform prediction)")


def _join_variadic(args: Sequence[str]) -> list[str]:
    """``--alphas 0 0.1 --seeds 2`` -> ``--alphas '0,0.1' --seeds 2``."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        joined.append(args[i])
        if args[i] in VARIADIC:
            values = []
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                values.append(args[i + 1])
                i += 1
            joined.append(",".join(values))
        i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m labelsmooth``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    try:
        cli.main(args=_join_variadic(args), prog_name="labelsmooth", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.exceptions.Abort:
        click.echo("labelsmooth: aborted", err=True)
        return 130
    except click.ClickException as error:
        click.echo(f"labelsmooth: error: {error.format_message()}".splitlines()[0], err=True)
        return USAGE_ERROR
    except UsageError as error:
        click.echo(f"labelsmooth: error: {error}".splitlines()[0], err=True)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

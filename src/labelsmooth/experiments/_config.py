"""The one home of ``compare``'s options: each one's default and its check.

:class:`CompareConfig` is a frozen dataclass; building one checks every
option (``ValueError``/``TypeError`` naming the option and the value, in the
library's one vocabulary, :func:`labelsmooth._validation.fail`) before
anything is read, trained or written. ``compare(...)`` builds one from its
keyword arguments; the ``labelsmooth compare`` command reads its defaults
from :data:`DEFAULTS` and builds one the same way (``cli=True`` names the
options as the command spells them), so no default and no check is written
twice.

This module imports neither torch nor anything that does at import time:
``labelsmooth --help`` reads the defaults from here and must stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CONVENTIONS", "DEFAULTS", "EXECUTORS", "OPTIMIZERS", "PENULTIMATE_SCALES", "PER_DATASET",
    "CompareConfig",
]

#: (epochs, batch size, learning rate) per kind of data set; "custom" is the user's own Datasets.
PER_DATASET = {
    "digits": (15, 64, 3e-3), "shapes": (15, 16, 3e-3), "mnist1d": (60, 100, 1e-2), "image": (15, 32, 1e-3),
    "table": (40, 64, 3e-3), "custom": (10, 64, 1e-3),
}
#: How the penultimate-layer panels are scaled: one scale for all (comparable), or each its own.
PENULTIMATE_SCALES = ("shared", "own")
OPTIMIZERS = ("adamw", "adam", "sgd")
EXECUTORS = ("local", "ray")
#: The smoothing conventions (:data:`labelsmooth._validation.CONVENTIONS`; a test keeps them equal).
CONVENTIONS = ("uniform", "others")
#: The command's spelling of the Python settings a message may suggest.
_CLI_NAMES = {"ci=False": "--no-ci", "allow_negative=True": "--allow-negative"}


@dataclass(frozen=True)
class CompareConfig:
    """Every option of ``compare`` besides its inputs (data, model, progress callback).

    See :func:`labelsmooth.experiments.compare` for what each option means.
    ``None`` for ``epochs``, ``batch_size`` and ``lr`` picks the data set's
    value from :data:`PER_DATASET`. ``cli`` (not stored) spells the options in
    messages as the command does (``--no-ci`` instead of ``ci=False``).
    """

    alphas: tuple[float, ...] = (0.0, 0.1)
    seeds: int = 3
    ci: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    optimizer: str | Callable[[Any], Any] = "adamw"
    device: str = "cpu"
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    #: torch threads of every run (and every worker): 1, so that ``jobs`` workers do not compete for cores
    #: and every executor gives the same bits.
    threads: int = 1
    out: Path | None = None
    resume: bool = False
    overwrite: bool = False
    num_classes: int | None = None
    penultimate: str | None = None
    ignore_index: int | None = None
    #: A quarter of the training split: temperature scaling, the report's baseline, is fitted on it and
    #: needs misclassified examples to pin T down (with 0.1, the default digits run's 126 validation digits
    #: had 1-2 errors per run, and every fit was left out).
    val_fraction: float = 0.25
    image_size: int = 32
    label_noise: float = 0.0
    convention: str = "uniform"
    mixup: float | None = None
    cutmix: float | None = None
    label_column: str = "label"
    penultimate_scale: str = "shared"
    allow_negative: bool = False
    #: Epochs of plain cross-entropy before each alpha starts (Wei et al.'s warm-up); below ``epochs``.
    warmup_epochs: int = 0
    cli: InitVar[bool] = False

    def __post_init__(self, cli: bool) -> None:
        try:
            self._check(cli)
        except (ValueError, TypeError) as error:
            if not cli:
                raise
            message = str(error)
            for name, spelled in _CLI_NAMES.items():
                message = message.replace(name, spelled)
            raise type(error)(message) from None

    def _check(self, cli: bool) -> None:
        from labelsmooth import _validation as v

        object.__setattr__(self, "alphas", _alphas(self.alphas, self.allow_negative))
        _seeds(self.seeds, self.ci)
        for name in ("epochs", "batch_size", "num_classes"):
            _positive(getattr(self, name), name, optional=True)
        for name in ("jobs", "threads", "image_size"):
            _positive(getattr(self, name), name)
        _training(self)
        v.check_probability(self.label_noise, "label_noise")
        v.check_convention(self.convention)
        for name in ("mixup", "cutmix"):
            if getattr(self, name) is not None:
                v.check_nonnegative(getattr(self, name), name)
        v.check_choice(self.penultimate_scale, "penultimate_scale", PENULTIMATE_SCALES)
        if self.ignore_index is not None:
            v.check_int(self.ignore_index, "ignore_index")
        _device(self.device)
        self._check_out(cli)

    def _check_out(self, cli: bool) -> None:
        from labelsmooth.experiments._outdir import check_out

        if self.out is None:
            if self.resume:
                raise _fail("out", "a folder to resume from (resume=True)", None)
            return
        object.__setattr__(self, "out", Path(self.out))
        flags = ("--resume", "--overwrite") if cli else ("resume", "overwrite")
        check_out(Path(self.out), resume=self.resume, overwrite=self.overwrite, flags=flags)

    def options(self) -> dict[str, Any]:
        """The options as ``compare``'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _fail(arg: str, expected: str, got: object) -> Exception:
    from labelsmooth import _validation as v

    return v.fail(arg, expected, got)


def _alphas(alphas: object, allow_negative: bool) -> tuple[float, ...]:
    from labelsmooth import _validation as v

    v.check_flag(allow_negative, "allow_negative")
    low = "-1" if allow_negative else "0"
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence) or len(alphas) == 0:
        raise v.fail("alphas", f"a non-empty list of numbers in [{low}, 1]", alphas)
    checked = tuple(v.check_smoothing_mass(a, "alphas", allow_negative=allow_negative) for a in alphas)
    if len(set(checked)) != len(checked):
        raise v.fail("alphas", "distinct values", alphas)
    return checked


def _positive(value: object, arg: str, *, optional: bool = False) -> None:
    """An int >= 1 (or ``None`` when ``optional``)."""
    from labelsmooth import _validation as v

    if optional and value is None:
        return
    if v.check_int(value, arg) < 1:
        raise v.fail(arg, "an int >= 1", value)


def _seeds(seeds: object, ci: object) -> None:
    """At least 2 seeds for a confidence interval, else 1."""
    from labelsmooth import _validation as v

    number = v.check_int(seeds, "seeds")
    if number < (2 if v.check_flag(ci, "ci") else 1):
        expected = "at least 2 seeds for a confidence interval (or ci=False)" if ci else "at least 1 seed"
        raise v.fail("seeds", expected, number)


def _training(config: CompareConfig) -> None:
    """The numeric and choice options of the training and the executor."""
    from labelsmooth import _validation as v

    if config.lr is not None and v.check_nonnegative(config.lr, "lr") == 0:
        raise v.fail("lr", "a real number > 0", config.lr)
    v.check_nonnegative(config.weight_decay, "weight_decay")
    if not callable(config.optimizer):
        v.check_choice(config.optimizer, "optimizer", OPTIMIZERS)
    if v.check_probability(config.val_fraction, "val_fraction") >= 1:
        raise v.fail("val_fraction", "a fraction in [0, 1)", config.val_fraction)
    v.check_choice(config.executor, "executor", EXECUTORS)
    if v.check_int(config.warmup_epochs, "warmup_epochs") < 0:
        raise v.fail("warmup_epochs", "an int >= 0", config.warmup_epochs)
    for name in ("resume", "overwrite"):
        v.check_flag(getattr(config, name), name)
    if config.ray_address is not None and config.executor != "ray":
        raise v.fail("ray_address", "no address unless executor='ray'", config.ray_address)
    if not isinstance(config.out, (type(None), str, os.PathLike)):
        raise v.fail("out", "a path to a folder", config.out, error=TypeError)


def _device(device: object) -> None:
    """A device string that names a device this machine has (``meta`` holds no data, so it is refused too)."""
    import torch

    from labelsmooth import _validation as v

    if not isinstance(device, str):
        raise v.fail("device", "a torch device string such as 'cpu' or 'cuda'", device, error=TypeError)
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise v.fail("device", "a torch device such as 'cpu' or 'cuda'", device) from None
    if parsed.type == "cpu":
        return
    if parsed.type == "meta":
        raise v.fail("device", "a device that holds data ('meta' only has shapes)", device)
    where = torch.backends if parsed.type == "mps" else torch
    backend = getattr(where, parsed.type, None)
    available = backend is not None and hasattr(backend, "is_available") and bool(backend.is_available())
    if not available:
        raise v.fail("device", f"an available device (no {parsed.type} device found)", device)
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise v.fail("device", f"an available device ({count} {parsed.type} device(s) found)", device)


#: Every option's default, read by ``compare``'s signature and the command's options.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(CompareConfig)}

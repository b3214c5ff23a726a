"""The checks of ``compare``'s options, run before anything is read, trained or written.

Each raises ``ValueError``/``TypeError`` naming the option and the value, in
the library's one vocabulary (:func:`labelsmooth._validation.fail`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from labelsmooth import _validation as v
from labelsmooth.experiments.executors import EXECUTORS
from labelsmooth.experiments.train import OPTIMIZERS

__all__ = [
    "check_alphas", "check_augmentation", "check_device", "check_positive", "check_seeds", "check_training"
]


def check_alphas(alphas: Sequence[float]) -> list[float]:
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence) or len(alphas) == 0:
        raise v.fail("alphas", "a non-empty list of numbers in [0, 1]", alphas)
    checked = [v.check_probability(a, "alphas") for a in alphas]
    if len(set(checked)) != len(checked):
        raise v.fail("alphas", "distinct values", alphas)
    return checked


def check_positive(value: object, arg: str, *, optional: bool = False) -> int | None:
    """An int >= 1 (or ``None`` when ``optional``)."""
    if optional and value is None:
        return None
    number = v.check_int(value, arg)
    if number < 1:
        raise v.fail(arg, "an int >= 1", number)
    return number


def check_seeds(seeds: object, ci: bool, *, no_ci: str = "ci=False") -> int:
    """At least 2 seeds for a confidence interval, else 1; ``no_ci`` says how to turn the interval off."""
    number = v.check_int(seeds, "seeds")
    if number < (2 if ci else 1):
        expected = f"at least 2 seeds for a confidence interval (or {no_ci})" if ci else "at least 1 seed"
        raise v.fail("seeds", expected, number)
    return number


def check_device(device: object) -> str:
    """A device string that names a device this machine has (``meta`` holds no data, so it is refused too)."""
    if not isinstance(device, str):
        raise v.fail("device", "a torch device string such as 'cpu' or 'cuda'", device, error=TypeError)
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise v.fail("device", "a torch device such as 'cpu' or 'cuda'", device) from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "meta":
        raise v.fail("device", "a device that holds data ('meta' only has shapes)", device)
    backend = getattr(torch, parsed.type, None)
    if parsed.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = backend is not None and hasattr(backend, "is_available") and bool(backend.is_available())
    if not available:
        raise v.fail("device", f"an available device (no {parsed.type} device found)", device)
    count = getattr(backend, "device_count", lambda: 1)()
    if parsed.index is not None and parsed.index >= count:
        raise v.fail("device", f"an available device ({count} {parsed.type} device(s) found)", device)
    return device


def check_training(*, lr: object, weight_decay: object, optimizer: object, val_fraction: object,
                   image_size: object, jobs: object, executor: object, threads: object) -> None:
    """The numeric and choice options of the training and the executor."""
    if lr is not None and (v.check_nonnegative(lr, "lr") == 0):
        raise v.fail("lr", "a real number > 0", lr)
    v.check_nonnegative(weight_decay, "weight_decay")
    if not callable(optimizer):
        v.check_choice(optimizer, "optimizer", OPTIMIZERS)
    fraction = v.check_probability(val_fraction, "val_fraction")
    if fraction >= 1:
        raise v.fail("val_fraction", "a fraction in [0, 1)", fraction)
    check_positive(image_size, "image_size")
    check_positive(jobs, "jobs")
    check_positive(threads, "threads")
    v.check_choice(executor, "executor", EXECUTORS)


def check_augmentation(label_noise: object, convention: object, mixup: object, cutmix: object) -> None:
    v.check_probability(label_noise, "label_noise")
    v.check_convention(convention)
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if value is not None:
            v.check_nonnegative(value, name)

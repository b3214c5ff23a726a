r"""Schedules for ``alpha``: ``LabelSmoothing(alpha=schedules.Cosine(0.1, 0.0, duration=10_000))``.

A schedule is a small callable object: ``schedule(state)`` reads
``state.step`` (``unit="step"``) or ``state.epoch`` (``unit="epoch"``) and
returns a smoothing mass in [0, 1]. :class:`~labelsmooth.LabelSmoothing` and
:class:`~labelsmooth.OnlineLabelSmoothing` accept one wherever they take
``alpha`` and read it at every ``BEFORE_LOSS``. Every schedule's values lie in
[0, 1] by construction: its end points are checked when it is built, and
interpolation between two of them cannot leave the interval.

With ``allow_negative=True`` the values may lie in [-1, 1]: negative label
smoothing (Wei et al., ICML 2022), whose loss is unbounded below (see
:func:`labelsmooth.cross_entropy`). Wei et al. start it only after training
with plain cross-entropy; a schedule that starts at 0 and goes negative is that
warm-up, and ``LabelSmoothing`` takes it with its own ``allow_negative=True``::

    warmup = Linear(0.0, -0.2, duration=5, unit="epoch", allow_negative=True)
    LabelSmoothing(warmup, allow_negative=True)

With ``t`` the counter, ``T`` the ``duration`` and ``a0``/``a1`` the
``start``/``end`` values:

- :class:`Constant`: ``a0``.
- :class:`Linear`: ``a0 + (a1 - a0) * min(t / T, 1)``.
- :class:`Cosine`: ``a1 + (a0 - a1) * (1 + cos(pi * min(t / T, 1))) / 2``.
- :class:`Step`: ``a0 * gamma ** (number of milestones <= t)`` (PyTorch's ``MultiStepLR``).
- :class:`WarmupDecay`: linear from ``start`` to ``peak`` over ``warmup``, then
  linear or cosine from ``peak`` to ``end`` until ``total``.
- :class:`Delayed`: ``before`` while ``t < after``, then ``a0``: Wei et al.'s
  warm-up with plain cross-entropy, switched off at once.

Example:
    >>> from labelsmooth import State
    >>> schedule = Linear(0.2, 0.0, duration=100)
    >>> schedule(State(step=0)), schedule(State(step=50)), schedule(State(step=500))
    (0.2, 0.1, 0.0)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labelsmooth import _validation as v

if TYPE_CHECKING:  # a schedule reads only state.step and state.epoch
    from labelsmooth.algorithms.state import State

__all__ = ["Constant", "Cosine", "Delayed", "Linear", "Schedule", "Step", "WarmupDecay"]

UNITS = ("step", "epoch")


def _check_count(value: object, arg: str, *, minimum: int) -> int:
    number = v.check_int(value, arg)
    if number < minimum:
        raise v.fail(arg, f"an int >= {minimum}", number)
    return number


def _between(value: float, start: float, end: float) -> float:
    # Interpolating between two values stays between them up to rounding; clip that away.
    return min(max(value, min(start, end)), max(start, end))


def _cosine(start: float, end: float, fraction: float) -> float:
    return _between(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction)), start, end)


def _linear(start: float, end: float, fraction: float) -> float:
    return _between(start + (end - start) * fraction, start, end)


class Schedule(ABC):
    """A smoothing mass that depends on ``state.step`` or ``state.epoch``.

    Subclasses implement :meth:`value` of the counter ``t``; calling the
    schedule with a :class:`~labelsmooth.State` reads the counter named by
    ``unit``. ``hparams`` (the constructor's arguments) drives ``__repr__``.
    ``allow_negative`` lets the values go down to -1 (negative smoothing).
    """

    def __init__(self, unit: str, allow_negative: bool = False) -> None:
        self.unit = v.check_choice(unit, "unit", UNITS)
        self.allow_negative = v.check_flag(allow_negative, "allow_negative")

    def _mass(self, value: object, arg: str) -> float:
        """A value the schedule takes: in [0, 1], or [-1, 1] with ``allow_negative``."""
        return v.check_smoothing_mass(value, arg, allow_negative=self.allow_negative)

    @property
    @abstractmethod
    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments."""

    @abstractmethod
    def value(self, t: int) -> float:
        """The smoothing mass at counter value ``t`` (>= 0)."""

    @property
    def lowest(self) -> float:
        """A lower bound of the values: the least one for the schedules here; for a subclass
        that does not say, the least its ``allow_negative`` permits."""
        return -1.0 if self.allow_negative else 0.0

    def __call__(self, state: State) -> float:
        t = v.check_int(state.step if self.unit == "step" else state.epoch, f"state.{self.unit}")
        return self.value(max(t, 0))

    def __repr__(self) -> str:
        flag = {"allow_negative": True} if self.allow_negative else {}
        args = ", ".join(f"{k}={x!r}" for k, x in {**self.hparams, **flag, "unit": self.unit}.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))


class Constant(Schedule):
    """The same ``alpha`` at every step: what a plain float means.

    Example:
        >>> Constant(0.1).value(10**6)
        0.1
    """

    def __init__(self, alpha: float, *, unit: str = "step", allow_negative: bool = False) -> None:
        super().__init__(unit, allow_negative)
        self.alpha = self._mass(alpha, "alpha")

    @property
    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    @property
    def lowest(self) -> float:
        return self.alpha

    def value(self, t: int) -> float:
        return self.alpha


class _Interpolated(Schedule):
    """From ``start`` at ``t = 0`` to ``end`` at ``t = duration``, then ``end``."""

    def __init__(self, start: float, end: float, *, duration: int, unit: str, allow_negative: bool) -> None:
        super().__init__(unit, allow_negative)
        self.start = self._mass(start, "start")
        self.end = self._mass(end, "end")
        self.duration = v.check_positive_int(duration, "duration")

    @property
    def hparams(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "duration": self.duration}

    @property
    def lowest(self) -> float:
        return min(self.start, self.end)

    def fraction(self, t: int) -> float:
        return min(t / self.duration, 1.0)


class Linear(_Interpolated):
    """``alpha`` moves linearly from ``start`` to ``end`` over ``duration`` steps (or epochs), then stays.

    Example:
        >>> [Linear(0.0, 0.1, duration=4).value(t) for t in (0, 2, 4, 9)]
        [0.0, 0.05, 0.1, 0.1]
    """

    def __init__(
        self, start: float, end: float, *, duration: int, unit: str = "step", allow_negative: bool = False
    ) -> None:
        super().__init__(start, end, duration=duration, unit=unit, allow_negative=allow_negative)

    def value(self, t: int) -> float:
        return _linear(self.start, self.end, self.fraction(t))


class Cosine(_Interpolated):
    """``alpha`` follows half a cosine from ``start`` to ``end`` over ``duration``, then stays.

    Example:
        >>> [round(Cosine(0.2, 0.0, duration=4).value(t), 6) for t in (0, 2, 4, 9)]
        [0.2, 0.1, 0.0, 0.0]

    References:
        Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm
        Restarts", 2017 (the cosine shape, without restarts).
    """

    def __init__(
        self, start: float, end: float, *, duration: int, unit: str = "step", allow_negative: bool = False
    ) -> None:
        super().__init__(start, end, duration=duration, unit=unit, allow_negative=allow_negative)

    def value(self, t: int) -> float:
        return _cosine(self.start, self.end, self.fraction(t))


class Step(Schedule):
    """``alpha`` is multiplied by ``gamma`` at each milestone, as PyTorch's ``MultiStepLR``.

    ``value(t) = alpha * gamma ** k`` where ``k`` counts the milestones ``<= t``.
    ``gamma > 1`` raises the smoothing (lowers a negative one); every value
    reached must lie in [0, 1] ([-1, 1] with ``allow_negative``).

    Example:
        >>> schedule = Step(0.2, milestones=[2, 4], gamma=0.5, unit="epoch")
        >>> [schedule.value(t) for t in (0, 1, 2, 3, 4, 10)]
        [0.2, 0.2, 0.1, 0.1, 0.05, 0.05]
    """

    def __init__(
        self, alpha: float, milestones: Sequence[int], *, gamma: float = 0.1, unit: str = "epoch",
        allow_negative: bool = False,
    ) -> None:
        super().__init__(unit, allow_negative)
        self.alpha = self._mass(alpha, "alpha")
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
            raise v.fail("milestones", "a sequence of ints", milestones, error=TypeError)
        marks = [_check_count(m, "milestones", minimum=0) for m in milestones]
        if marks != sorted(set(marks)):
            raise v.fail("milestones", "strictly increasing ints", list(milestones))
        self.milestones = tuple(marks)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise v.fail("gamma", "a finite real number >= 0", gamma, error=TypeError)
        if not math.isfinite(gamma) or gamma < 0:
            raise v.fail("gamma", "a finite real number >= 0", gamma)
        self.gamma = float(gamma)
        low = -1.0 if self.allow_negative else 0.0
        for k in range(len(marks) + 1):
            reached = self.alpha * self.gamma**k
            if not low <= reached <= 1.0:
                expected = f"a factor that keeps alpha in [{low:g}, 1] (alpha * gamma**{k} = {reached:g})"
                raise v.fail("gamma", expected, gamma)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "milestones": list(self.milestones), "gamma": self.gamma}

    @property
    def lowest(self) -> float:
        return min(self.alpha * self.gamma**k for k in range(len(self.milestones) + 1))

    def value(self, t: int) -> float:
        passed = sum(1 for m in self.milestones if m <= t)
        # The same product the constructor checked, so it lies in the allowed range.
        return self.alpha * self.gamma**passed


class WarmupDecay(Schedule):
    """Linear warm-up from ``start`` to ``peak`` over ``warmup``, then decay to ``end`` at ``total``.

    ``total`` counts from ``t = 0`` (warm-up included), as optax's
    ``warmup_cosine_decay_schedule``; after ``total`` the value is ``end``.

    Args:
        peak: the value at ``t = warmup``.
        warmup: length of the warm-up (>= 0).
        total: where the decay ends (>= ``warmup``).
        start, end: the values at ``t = 0`` and ``t >= total``.
        decay: ``"cosine"`` or ``"linear"``.
        unit: ``"step"`` or ``"epoch"``.
        allow_negative: let ``peak``, ``start`` and ``end`` be in [-1, 0).

    Example:
        >>> schedule = WarmupDecay(0.2, warmup=2, total=6, decay="linear")
        >>> [round(schedule.value(t), 6) for t in (0, 1, 2, 4, 6, 8)]
        [0.0, 0.1, 0.2, 0.1, 0.0, 0.0]
    """

    def __init__(
        self, peak: float, *, warmup: int, total: int, start: float = 0.0, end: float = 0.0,
        decay: str = "cosine", unit: str = "step", allow_negative: bool = False,
    ) -> None:
        super().__init__(unit, allow_negative)
        self.peak = self._mass(peak, "peak")
        self.start = self._mass(start, "start")
        self.end = self._mass(end, "end")
        self.warmup = _check_count(warmup, "warmup", minimum=0)
        self.total = _check_count(total, "total", minimum=self.warmup)
        self.decay = v.check_choice(decay, "decay", ("cosine", "linear"))

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "peak": self.peak, "warmup": self.warmup, "total": self.total, "start": self.start,
            "end": self.end, "decay": self.decay,
        }

    @property
    def lowest(self) -> float:
        return min(self.start, self.peak, self.end)

    def value(self, t: int) -> float:
        if t < self.warmup:
            return _linear(self.start, self.peak, t / self.warmup)
        if t >= self.total:
            return self.end
        fraction = (t - self.warmup) / (self.total - self.warmup)
        interpolate = _cosine if self.decay == "cosine" else _linear
        return interpolate(self.peak, self.end, fraction)


class Delayed(Schedule):
    """``before`` (0: plain cross-entropy) while ``t < after``, then ``alpha`` from ``t = after`` on.

    Wei et al. train with cross-entropy first and switch to negative smoothing
    once the model fits the clean majority of the labels; this is that switch,
    all at once rather than ramped (:class:`Linear` ramps).

    Example:
        >>> schedule = Delayed(-0.2, after=3, unit="epoch", allow_negative=True)
        >>> [schedule.value(t) for t in (0, 2, 3, 10)]
        [0.0, 0.0, -0.2, -0.2]

    References:
        Wei, Liu, Liu, Sun, Cheng and Liu, "To Smooth or Not? When Label
        Smoothing Meets Noisy Labels", ICML 2022.
    """

    def __init__(
        self, alpha: float, *, after: int, before: float = 0.0, unit: str = "step",
        allow_negative: bool = False,
    ) -> None:
        super().__init__(unit, allow_negative)
        self.alpha = self._mass(alpha, "alpha")
        self.after = _check_count(after, "after", minimum=0)
        self.before = self._mass(before, "before")

    @property
    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "after": self.after, "before": self.before}

    @property
    def lowest(self) -> float:
        return min(self.alpha, self.before) if self.after > 0 else self.alpha

    def value(self, t: int) -> float:
        return self.before if t < self.after else self.alpha


def check_alpha(alpha: object, *, allow_negative: bool = False) -> float | Schedule:
    """``alpha`` as given to an algorithm: a :class:`Schedule`, or a float in [0, 1]; a
    negative float, or a schedule that goes below 0, only with ``allow_negative``."""
    if not isinstance(alpha, Schedule):
        return v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    if alpha.lowest < 0 and not v.check_flag(allow_negative, "allow_negative"):
        raise v.fail("alpha", f"a schedule with values in [0, 1], or {v.NEGATIVE_ALPHA}", alpha)
    return alpha


def alpha_at(alpha: float | Schedule, state: State) -> float:
    """The smoothing mass now: ``alpha`` itself, or the schedule's value at ``state``."""
    return alpha(state) if isinstance(alpha, Schedule) else alpha


def plain_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with each schedule replaced by its ``repr``, for a ``state_dict``.

    A checkpoint then holds no objects of this library, so ``torch.load``'s
    default ``weights_only=True`` reads it. A schedule has no state of its own:
    it is a function of the counters that the training loop restores.
    """
    return {k: repr(x) if isinstance(x, Schedule) else x for k, x in hparams.items()}

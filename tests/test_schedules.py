"""Schedules for alpha: hand-computed values at given steps, bad arguments, LabelSmoothing reading them."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import labelsmooth as ls
from labelsmooth import Event, State
from labelsmooth.schedules import Constant, Cosine, Delayed, Linear, Schedule, Step, WarmupDecay

#: name -> (schedule, {t: expected value}), every value worked out by hand.
VALUES = {
    "constant": (Constant(0.1), {0: 0.1, 7: 0.1, 10**9: 0.1}),
    "linear-down": (Linear(0.2, 0.0, duration=10), {0: 0.2, 1: 0.18, 5: 0.1, 10: 0.0, 11: 0.0, 1000: 0.0}),
    "linear-up": (Linear(0.0, 0.1, duration=4), {0: 0.0, 1: 0.025, 3: 0.075, 4: 0.1, 8: 0.1}),
    "cosine": (
        Cosine(0.2, 0.0, duration=4),
        # 0.1 * (1 + cos(pi * t / 4))
        {0: 0.2, 1: 0.1 * (1 + math.sqrt(0.5)), 2: 0.1, 3: 0.1 * (1 - math.sqrt(0.5)), 4: 0.0, 9: 0.0},
    ),
    "cosine-up": (Cosine(0.0, 0.3, duration=2), {0: 0.0, 1: 0.15, 2: 0.3, 5: 0.3}),
    "step": (Step(0.2, [3, 6], gamma=0.5), {0: 0.2, 2: 0.2, 3: 0.1, 5: 0.1, 6: 0.05, 100: 0.05}),
    "step-up": (Step(0.1, [1], gamma=4.0), {0: 0.1, 1: 0.4, 2: 0.4}),
    "step-to-zero": (Step(0.1, [2], gamma=0.0), {0: 0.1, 1: 0.1, 2: 0.0}),
    "warmup-linear": (
        WarmupDecay(0.2, warmup=4, total=8, decay="linear"),
        {0: 0.0, 1: 0.05, 2: 0.1, 4: 0.2, 5: 0.15, 6: 0.1, 8: 0.0, 20: 0.0},
    ),
    "warmup-cosine": (
        WarmupDecay(0.3, warmup=2, total=6, start=0.1, end=0.05),
        # warm-up 0.1 -> 0.3; then 0.05 + 0.25 * (1 + cos(pi * (t - 2) / 4)) / 2
        {0: 0.1, 1: 0.2, 2: 0.3, 4: 0.175, 6: 0.05, 7: 0.05},
    ),
    "warmup-only": (WarmupDecay(0.1, warmup=2, total=2, end=0.1), {0: 0.0, 1: 0.05, 2: 0.1, 3: 0.1}),
    "no-warmup": (WarmupDecay(0.1, warmup=0, total=2, decay="linear"), {0: 0.1, 1: 0.05, 2: 0.0}),
    "delayed": (Delayed(0.3, after=2), {0: 0.0, 1: 0.0, 2: 0.3, 50: 0.3}),
    "delayed-from-a-value": (Delayed(0.1, after=1, before=0.2, unit="epoch"), {0: 0.2, 1: 0.1, 9: 0.1}),
    "delayed-at-once": (Delayed(0.1, after=0), {0: 0.1, 5: 0.1}),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_values_at_steps(name):
    schedule, expected = VALUES[name]
    for t, value in expected.items():
        other = "epoch" if schedule.unit == "step" else "step"
        state = State(**{schedule.unit: t, other: 10**6})
        assert schedule(state) == pytest.approx(value, abs=1e-12), t


@pytest.mark.parametrize("name", list(VALUES))
def test_values_stay_in_unit_interval(name):
    schedule, _ = VALUES[name]
    values = [schedule.value(t) for t in range(30)]
    assert all(0.0 <= a <= 1.0 for a in values)


def test_unit_epoch_reads_the_epoch():
    schedule = Linear(0.1, 0.0, duration=2, unit="epoch")
    assert schedule(State(step=10**6, epoch=1)) == pytest.approx(0.05)
    # Step counts epochs by default (milestones as in PyTorch's MultiStepLR); the others count steps.
    assert Step(0.2, [1], gamma=0.5)(State(step=0, epoch=1)) == pytest.approx(0.1)
    assert Step(0.2, [1], gamma=0.5, unit="step")(State(step=0, epoch=1)) == pytest.approx(0.2)


def test_negative_counter_reads_as_zero():
    assert Linear(0.2, 0.0, duration=2)(State(step=-3)) == pytest.approx(0.2)


BAD = {
    "alpha-above-1": (lambda: Constant(1.5), ValueError, "alpha"),
    "alpha-nan": (lambda: Constant(float("nan")), ValueError, "alpha"),
    "alpha-str": (lambda: Constant("0.1"), TypeError, "alpha"),
    "unit": (lambda: Linear(0.1, 0.0, duration=2, unit="batch"), ValueError, "unit"),
    "end-negative": (lambda: Linear(0.1, -0.1, duration=2), ValueError, "end"),
    "duration-zero": (lambda: Cosine(0.1, 0.0, duration=0), ValueError, "duration"),
    "duration-float": (lambda: Cosine(0.1, 0.0, duration=2.5), TypeError, "duration"),
    "milestones-unsorted": (lambda: Step(0.1, [5, 2]), ValueError, "milestones"),
    "milestones-repeated": (lambda: Step(0.1, [2, 2]), ValueError, "milestones"),
    "milestones-int": (lambda: Step(0.1, 3), TypeError, "milestones"),
    "gamma-negative": (lambda: Step(0.1, [1], gamma=-0.5), ValueError, "gamma"),
    "gamma-beyond-1": (lambda: Step(0.3, [1, 2], gamma=2.0), ValueError, "gamma"),
    "warmup-negative": (lambda: WarmupDecay(0.1, warmup=-1, total=2), ValueError, "warmup"),
    "total-before-warmup": (lambda: WarmupDecay(0.1, warmup=3, total=2), ValueError, "total"),
    "decay": (lambda: WarmupDecay(0.1, warmup=1, total=2, decay="exp"), ValueError, "decay"),
    "peak": (lambda: WarmupDecay(2.0, warmup=1, total=2), ValueError, "peak"),
    "after-negative": (lambda: Delayed(0.1, after=-1), ValueError, "after"),
    "after-float": (lambda: Delayed(0.1, after=1.5), TypeError, "after"),
    "before-negative": (lambda: Delayed(0.1, after=1, before=-0.1), ValueError, "before"),
    "delayed-negative": (lambda: Delayed(-0.2, after=1), ValueError, "alpha"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments(name):
    build, error, arg = BAD[name]
    with pytest.raises(error, match=f"^{arg}: expected"):
        build()


@pytest.mark.parametrize("name", list(VALUES))
def test_repr_and_pickle(name):
    schedule, expected = VALUES[name]
    assert repr(schedule).startswith(type(schedule).__name__ + "(")
    copy = pickle.loads(pickle.dumps(schedule))
    assert copy == schedule and hash(copy) == hash(schedule)
    assert [copy.value(t) for t in expected] == [schedule.value(t) for t in expected]


def test_top_level_names():
    assert ls.schedules.Linear is Linear
    assert issubclass(WarmupDecay, Schedule)


# ---------------------------------------------------------------- LabelSmoothing(alpha=schedule)


def _smoothed_target(algorithm: ls.LabelSmoothing, step: int) -> torch.Tensor:
    state = State(batch=(torch.zeros(2, 1), torch.tensor([0, 2])), outputs=torch.zeros(2, 4), step=step)
    with ls.Engine(state, [algorithm]).loss_events():
        return state.batch[1]


@pytest.mark.parametrize("step, alpha", [(0, 0.2), (5, 0.1), (10, 0.0), (50, 0.0)], ids=lambda x: str(x))
def test_label_smoothing_reads_schedule_at_before_loss(step, alpha):
    target = _smoothed_target(ls.LabelSmoothing(Linear(0.2, 0.0, duration=10)), step)
    expected = torch.full((2, 4), alpha / 4)
    expected[0, 0] += 1 - alpha
    expected[1, 2] += 1 - alpha
    torch.testing.assert_close(target, expected)


def test_label_smoothing_schedule_not_materialized_loss():
    """With SoftTargets the loss equals F.cross_entropy(label_smoothing=schedule value)."""
    logits = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 5, 2, 2, 1])
    state = State(batch=(None, y), outputs=logits, epoch=1)
    engine = ls.Engine(state, [ls.LabelSmoothing(Step(0.3, [1], gamma=0.5), materialize=False)])
    with engine.loss_events():
        loss = ls.cross_entropy(logits, state.batch[1])
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.15))


def test_label_smoothing_with_schedule_repr_and_state_dict(tmp_path):
    algorithm = ls.LabelSmoothing(alpha=Cosine(0.1, 0.0, duration=100))
    text = "Cosine(start=0.1, end=0.0, duration=100, unit='step')"
    assert f"alpha={text}" in repr(algorithm)
    # The checkpoint holds the schedule's repr, so torch.load's default weights_only=True reads it.
    torch.save(algorithm.state_dict(), tmp_path / "ls.pt")
    assert torch.load(tmp_path / "ls.pt")["hparams"]["alpha"] == text
    assert ls.LabelSmoothing(smoothing=Constant(0.2)).alpha == Constant(0.2)


def test_label_smoothing_schedule_composes_with_others():
    """Two LabelSmoothing with different conventions on one target are refused when a schedule may smooth."""
    first = ls.LabelSmoothing(Linear(0.0, 0.1, duration=10))
    second = ls.LabelSmoothing(0.1, convention="others")
    with pytest.raises(ValueError, match="algorithms"):
        ls.Engine(State(), [first, second])


def test_label_smoothing_schedule_read_at_every_step():
    """The scheduled value is read anew at every BEFORE_LOSS."""
    algorithm = ls.LabelSmoothing(Linear(0.4, 0.0, duration=4))
    state = State(batch=(torch.zeros(1, 1), torch.tensor([1])), outputs=torch.zeros(1, 2))
    engine = ls.Engine(state, [algorithm])
    seen = []
    for step in range(5):
        state.step = step
        engine.run_event(Event.BEFORE_LOSS)
        seen.append(float(state.batch[1][0, 0]))
        engine.run_event(Event.AFTER_LOSS)
    assert seen == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])

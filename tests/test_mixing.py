"""MixUp, CutMix and LabelSmoothing in every order against a dense float64 reference."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth as ls
from labelsmooth import CutMix, Engine, Event, LabelSmoothing, MixUp, SoftTargets, State

N, C, H, W = 6, 5, 4, 4
ALPHA = 0.2
IGNORE = 255


def _data(segmentation: bool, seed: int = 0, ignore: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, H, W, generator=g, dtype=torch.float64)
    shape = (N, H, W) if segmentation else (N,)
    y = torch.randint(0, C, shape, generator=g)
    if ignore:
        y = torch.where(torch.rand(shape, generator=g) < 0.25, IGNORE, y)
    logits = torch.randn(N, C, *shape[1:], generator=g, dtype=torch.float64)
    return x, y, logits


def _onehot(y):
    return ref.one_hot(y, C, ignore_index=IGNORE)  # class dim last


def _box_mask(box):
    top, left, bottom, right = box
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def _reference(x, y, algorithms, segmentation, alpha):
    """Inputs and dense class-last targets, mixed in list order and then smoothed."""
    q = _onehot(y)
    for algorithm in algorithms:
        perm = algorithm.permutation
        if isinstance(algorithm, MixUp):
            lam = algorithm.mixing
            x = (1 - lam) * x + lam * x[perm]
            q = (1 - lam) * q + lam * q[perm]
        elif isinstance(algorithm, CutMix):
            mask = _box_mask(algorithm.box)
            x = torch.where(mask, x[perm], x)
            if segmentation:
                q = torch.where(mask.unsqueeze(-1), q[perm], q)
            else:
                q = (1 - algorithm.mixing) * q + algorithm.mixing * q[perm]
    return x, ref.smooth(q, alpha)


def _dense_loss(logits, q):
    """The float64 oracle's mean: ``q`` is class-last, the logits have their classes at dim 1."""
    return ref.cross_entropy(logits.movedim(1, -1), q)


def _build(names, materialize, interpolate, seed=0, ignore_index=None):
    made = {
        "LS": lambda: LabelSmoothing(ALPHA, materialize=materialize, ignore_index=ignore_index),
        "MixUp": lambda: MixUp(
            0.4,
            interpolate_loss=interpolate,
            materialize=materialize,
            seed=seed,
            loss_fn=lambda out, t: ls.cross_entropy(out, t),
        ),
        "CutMix": lambda: CutMix(1.0, materialize=materialize, seed=seed + 1),
    }
    return [made[name]() for name in names]


def _step(engine, state, logits, loss=ls.cross_entropy):
    engine.run_event(Event.BEFORE_FORWARD)
    seen = {"inputs": state.batch[0]}
    state.outputs = logits
    with engine.loss_events():
        seen["targets"] = state.batch[1]
        state.loss = loss(state.outputs, state.batch[1])
    return seen


ORDERS = [list(p) for r in (1, 2, 3) for p in itertools.permutations(["LS", "MixUp", "CutMix"], r)]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "-".join(o))
@pytest.mark.parametrize("materialize", [True, False], ids=["dense", "soft"])
@pytest.mark.parametrize("interpolate", [False, True], ids=["mixed", "interp"])
@pytest.mark.parametrize("segmentation", [False, True], ids=["cls", "seg"])
def test_every_order_gives_the_dense_reference_loss(order, materialize, interpolate, segmentation):
    x, y, logits = _data(segmentation)
    x0, y0 = x.clone(), y.clone()
    algorithms = _build(order, materialize, interpolate)
    state = State(batch=(x, y))
    engine = Engine(state, algorithms)
    seen = _step(engine, state, logits)

    mixers = [a for a in algorithms if not isinstance(a, LabelSmoothing)]
    alpha = ALPHA if "LS" in order else 0.0
    x_ref, q_ref = _reference(x0, y0, mixers, segmentation, alpha)
    torch.testing.assert_close(seen["inputs"], x_ref)
    torch.testing.assert_close(state.loss, _dense_loss(logits, q_ref))
    if not interpolate:
        target = seen["targets"]
        soft = isinstance(target, SoftTargets)
        assert soft == (not materialize)
        dense = target.to_dense(C, torch.float64) if soft else target
        torch.testing.assert_close(dense.movedim(1, -1), q_ref)
        # No smoothing is lost: every class keeps at least alpha * u_c.
        assert float(dense.min()) >= alpha / C - 1e-12
    # The original target object is back; nothing the user gave was written.
    assert state.batch[1] is y
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("order", [["LS", "MixUp"], ["MixUp", "LS"]], ids=["LS-MixUp", "MixUp-LS"])
def test_composer_failures_do_not_happen(order):
    """[LS, MixUp]: the permuted half was unsmoothed; [MixUp, LS]: the mixed target stayed."""
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    algorithms = _build(order, True, False)
    seen = _step(Engine(state, algorithms), state, logits)
    mixup = next(a for a in algorithms if isinstance(a, MixUp))
    lam, perm = mixup.mixing, mixup.permutation
    expected = (1 - ALPHA) * ((1 - lam) * _onehot(y) + lam * _onehot(y[perm])) + ALPHA / C
    torch.testing.assert_close(seen["targets"], expected)
    assert state.batch[1] is y


def test_interpolated_second_term_is_smoothed():
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    mixup = MixUp(0.4, interpolate_loss=True, seed=3, loss_fn=lambda out, t: F.cross_entropy(out, t))
    _step(Engine(state, [mixup, LabelSmoothing(ALPHA)]), state, logits, loss=F.cross_entropy)
    lam, perm = mixup.mixing, mixup.permutation
    expected = (1 - lam) * F.cross_entropy(logits, y, label_smoothing=ALPHA) + lam * F.cross_entropy(
        logits, y[perm], label_smoothing=ALPHA
    )
    torch.testing.assert_close(state.loss, expected)


def test_materialized_targets_work_with_pytorch_cross_entropy():
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    algorithms = _build(["MixUp", "LS", "CutMix"], True, False)
    seen = _step(Engine(state, algorithms), state, logits, loss=F.cross_entropy)
    _, q = _reference(x, y, algorithms[0:1] + algorithms[2:], False, ALPHA)
    torch.testing.assert_close(state.loss, _dense_loss(logits, q))
    assert seen["targets"].dtype == torch.float64


def test_mixed_materialize_settings_give_dense_targets():
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    algorithms = [LabelSmoothing(ALPHA, materialize=False), MixUp(0.4, seed=0, materialize=True)]
    seen = _step(Engine(state, algorithms), state, logits)
    assert isinstance(seen["targets"], torch.Tensor)


def test_ignored_pixels_stay_ignored_through_cutmix_and_smoothing():
    x, y, logits = _data(True, ignore=True)
    state = State(batch=(x, y))
    algorithms = [
        CutMix(1.0, seed=4, materialize=False),
        LabelSmoothing(ALPHA, materialize=False, ignore_index=IGNORE),
    ]
    seen = _step(Engine(state, algorithms), state, logits)
    cutmix = algorithms[0]
    mask = _box_mask(cutmix.box)
    pasted = torch.where(mask, y[cutmix.permutation], y)
    expected = F.cross_entropy(logits, pasted, ignore_index=IGNORE, label_smoothing=ALPHA)
    torch.testing.assert_close(state.loss, expected)
    assert seen["targets"].ignore_index == IGNORE
    assert (seen["targets"].to_dense(dtype=torch.float64).sum(1) == 0).eq(pasted == IGNORE).all()


def test_same_seed_same_mixing_and_state_model_loss_fallback():
    def run():
        x, y, logits = _data(False)
        model = SimpleNamespace(loss=lambda out, batch: ls.cross_entropy(out, batch[1]))
        state = State(batch=(x, y), model=model)
        mixup = MixUp(0.4, interpolate_loss=True, seed=11)
        _step(Engine(state, [mixup]), state, logits)
        return mixup.mixing, mixup.permutation, state.loss

    first, second = run(), run()
    assert first[0] == second[0] and torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])


def test_targets_restored_when_the_loss_raises():
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    engine = Engine(state, _build(["LS", "MixUp"], False, False))
    engine.run_event(Event.BEFORE_FORWARD)
    state.outputs = logits
    with pytest.raises(RuntimeError, match="boom"), engine.loss_events():
        raise RuntimeError("boom")
    assert state.batch[1] is y


def test_a_new_batch_starts_a_new_pipeline():
    """Two steps in a row: the second batch's targets are not mixed with the first's."""
    algorithms = _build(["MixUp", "LS"], False, False)
    state = State()
    engine = Engine(state, algorithms)
    for seed in (0, 1):
        x, y, logits = _data(False, seed=seed)
        state.batch = (x, y)
        seen = _step(engine, state, logits)
        _, q = _reference(x, y, algorithms[:1], False, ALPHA)
        torch.testing.assert_close(seen["targets"].to_dense(C, torch.float64), q)
        assert state.batch[1] is y


def test_multilabel_smoothing_composes_with_mixup():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 3, H, W, generator=g)
    y = (torch.rand(N, C, generator=g) < 0.4).float()
    logits = torch.randn(N, C, generator=g)
    state = State(batch=(x, y))
    mixup = MixUp(0.4, seed=2)
    seen = _step(
        Engine(state, [LabelSmoothing(ALPHA, task="multilabel"), mixup]),
        state,
        logits,
        loss=F.binary_cross_entropy_with_logits,
    )
    lam, perm = mixup.mixing, mixup.permutation
    expected = ((1 - lam) * y + lam * y[perm]) * (1 - ALPHA) + ALPHA / 2
    torch.testing.assert_close(seen["targets"], expected)
    assert state.batch[1] is y


@pytest.mark.parametrize(
    ("algorithms", "match"),
    [
        (lambda: [MixUp(interpolate_loss=True), MixUp(interpolate_loss=True)], "interpolate_loss"),
        (lambda: [LabelSmoothing(0.1), LabelSmoothing(0.1, prior=torch.tensor([0.5, 0.5]))], "prior"),
        (lambda: [LabelSmoothing(0.1, ignore_index=255), CutMix(ignore_index=-1)], "ignore_index"),
        (lambda: [LabelSmoothing(0.1), LabelSmoothing(0.1, task="multilabel")], "task"),
    ],
    ids=["two-interpolations", "two-priors", "two-ignore-indices", "two-tasks"],
)
def test_engine_refuses_lists_that_cannot_compose_at_start_up(algorithms, match):
    with pytest.raises(ValueError, match=match):
        Engine(State(), algorithms())


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: MixUp(alpha=-1.0), ValueError),
        (lambda: MixUp(alpha="a"), TypeError),
        (lambda: MixUp(interpolate_loss=1), TypeError),
        (lambda: CutMix(materialize="no"), TypeError),
        (lambda: CutMix(seed=1, generator=torch.Generator()), ValueError),
        (lambda: LabelSmoothing(task="binary"), ValueError),
    ],
    ids=["negative-alpha", "str-alpha", "int-flag", "str-materialize", "seed-and-generator", "task"],
)
def test_bad_arguments_are_refused(make, error):
    with pytest.raises(error):
        make()


def test_interpolate_loss_without_a_loss_function_says_so():
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    engine = Engine(state, [MixUp(interpolate_loss=True, seed=0)])
    with pytest.raises(ValueError, match="loss_fn"):
        _step(engine, state, logits)


@pytest.mark.parametrize(
    "make", [lambda: MixUp(0.4, seed=7), lambda: CutMix(1.0, seed=7)], ids=["MixUp", "CutMix"]
)
def test_state_dict_resumes_the_same_draws(make):
    x, y, logits = _data(False)

    def step(algorithm):
        state = State(batch=(x, y))
        _step(Engine(state, [algorithm]), state, logits)
        return algorithm.mixing, algorithm.permutation

    first = make()
    step(first)
    saved = first.state_dict()
    expected = step(first)
    resumed = make()
    resumed.load_state_dict(saved)
    got = step(resumed)
    assert got[0] == expected[0] and torch.equal(got[1], expected[1])
    assert saved["hparams"]["seed"] == 7


@pytest.mark.parametrize("materialize", [True, False], ids=["dense", "soft"])
def test_language_model_logits_with_class_dim_last(materialize):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(N, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N, 7), generator=g)
    logits = torch.randn(N, 7, C, generator=g, dtype=torch.float64)
    mixup = MixUp(0.4, seed=0, materialize=materialize)
    state = State(batch=(x, y))
    algorithms = [LabelSmoothing(ALPHA, dim=-1, materialize=materialize), mixup]
    _step(Engine(state, algorithms), state, logits, loss=lambda out, t: ls.cross_entropy(out, t, dim=-1))
    lam, perm = mixup.mixing, mixup.permutation
    q = (1 - ALPHA) * ((1 - lam) * _onehot(y) + lam * _onehot(y[perm])) + ALPHA / C
    torch.testing.assert_close(state.loss, ref.cross_entropy(logits, q))
    assert state.batch[1] is y


def test_cutmix_takes_composers_arguments_in_composers_order():
    """Composer's CutMix(alpha=1.0, interpolate_loss=False, uniform_sampling=False, input_key=0,
    target_key=1): a positional call means the same in both libraries."""
    import inspect

    params = list(inspect.signature(CutMix).parameters.values())[:5]
    assert [(p.name, p.default) for p in params] == [
        ("alpha", 1.0), ("interpolate_loss", False), ("uniform_sampling", False), ("input_key", 0),
        ("target_key", 1),
    ]
    cutmix = CutMix(1.0, True)
    assert cutmix.interpolate_loss and not cutmix.uniform_sampling
    assert CutMix(1.0, False, True).uniform_sampling


@pytest.mark.parametrize("order", [["CutMix", "LS"], ["LS", "CutMix"]], ids=["CutMix-LS", "LS-CutMix"])
def test_cutmix_interpolated_loss_is_two_smoothed_losses(order):
    """(1 - area) CE(y) + area CE(y[perm]), both smoothed: for CE, also the loss on the mixed target."""
    x, y, logits = _data(False)
    cutmix = CutMix(1.0, True, seed=9, loss_fn=lambda out, t: ls.cross_entropy(out, t))
    made = {"CutMix": cutmix, "LS": LabelSmoothing(ALPHA)}
    state = State(batch=(x, y))
    seen = _step(Engine(state, [made[name] for name in order]), state, logits)
    area, perm = cutmix.mixing, cutmix.permutation
    assert 0.0 < area < 1.0
    expected = (1 - area) * F.cross_entropy(logits, y, label_smoothing=ALPHA) + area * F.cross_entropy(
        logits, y[perm], label_smoothing=ALPHA
    )
    torch.testing.assert_close(state.loss, expected)
    _, q = _reference(x, y, [cutmix], False, ALPHA)
    torch.testing.assert_close(state.loss, _dense_loss(logits, q))
    # The batch's target was left unmixed (smoothed only).
    torch.testing.assert_close(seen["targets"], (1 - ALPHA) * _onehot(y) + ALPHA / C)
    assert state.batch[1] is y


def test_cutmix_cannot_interpolate_the_loss_of_a_pasted_target_map():
    x, y, _ = _data(True)
    state = State(batch=(x, y))
    engine = Engine(state, [CutMix(1.0, True, seed=0, loss_fn=F.cross_entropy)])
    with pytest.raises(ValueError, match=r"^interpolate_loss: expected False for targets with the inputs'"):
        engine.run_event(Event.BEFORE_FORWARD)


# Composer's own CutMix test (tests/algorithms/test_cutmix.py): (N, C, d1, d2) = (7, 11, 3, 5), 10
# classes, keyword arguments, and the algorithm's apply() called at each event without an Engine.
@pytest.mark.parametrize("interpolate_loss", [True, False], ids=["interp", "mixed"])
@pytest.mark.parametrize("uniform_sampling", [True, False], ids=["uniform", "paper"])
@pytest.mark.parametrize("alpha", [0.2, 1.0], ids=["a0.2", "a1"])
def test_cutmix_in_composers_call_pattern(alpha, uniform_sampling, interpolate_loss):
    g = torch.Generator().manual_seed(17)
    x = torch.randn(7, 11, 3, 5, generator=g)
    y = torch.randint(10, size=(7,), generator=g)
    logits = torch.randn(7, 10, generator=g)
    algorithm = CutMix(
        alpha=alpha, uniform_sampling=uniform_sampling, interpolate_loss=interpolate_loss, seed=3
    )
    model = SimpleNamespace(loss=lambda outputs, batch: F.cross_entropy(outputs, batch[1]))
    state, logger = State(batch=(x, y), model=model), ls.Logger()

    algorithm.apply(Event.BEFORE_FORWARD, state, logger)
    mixed, perm = state.batch[0], algorithm.permutation
    top, left, bottom, right = algorithm.box
    inside = torch.zeros(3, 5, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    torch.testing.assert_close(mixed, torch.where(inside, x[perm], x))  # Composer's validate_cutmix
    area = (bottom - top) * (right - left) / 15  # Composer's 1 - adjusted_lambda
    assert algorithm.mixing == area

    state.outputs = logits
    algorithm.apply(Event.BEFORE_LOSS, state, logger)
    onehot = F.one_hot(y, 10).float()
    expected_target = onehot if interpolate_loss else (1 - area) * onehot + area * onehot[perm]
    torch.testing.assert_close(state.batch[1], expected_target)
    state.loss = F.cross_entropy(logits, state.batch[1])
    algorithm.apply(Event.AFTER_LOSS, state, logger)
    expected_loss = (1 - area) * F.cross_entropy(logits, y) + area * F.cross_entropy(logits, y[perm])
    torch.testing.assert_close(state.loss, expected_loss)
    assert state.batch[1] is y


@pytest.mark.parametrize(
    "make",
    [
        lambda: MixUp(0.4, interpolate_loss=True, seed=0, loss_fn=F.cross_entropy),
        lambda: CutMix(1.0, True, seed=0, loss_fn=F.cross_entropy),
    ],
    ids=["MixUp", "CutMix"],
)
def test_an_error_in_the_loss_surfaces_and_the_targets_come_back_when_interpolating(make):
    """With no loss to interpolate, AFTER_LOSS still restores the targets and the body's error is raised."""
    x, y, logits = _data(False)
    state = State(batch=(x, y))
    engine = Engine(state, [make(), LabelSmoothing(ALPHA)])
    engine.run_event(Event.BEFORE_FORWARD)
    state.outputs = logits
    with pytest.raises(RuntimeError, match=r"^the loss failed$"), engine.loss_events():
        raise RuntimeError("the loss failed")
    assert state.batch[1] is y

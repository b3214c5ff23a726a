"""Binary / multi-label cross-entropy with Keras-style label smoothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import labelsmooth as ls


def _case(seed, shape=(4, 3)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(shape, generator=g) < 0.5).double()
    return g, logits, targets


def _reference(logits, targets, alpha, weight=None, pos_weight=None):
    """Hand-computed float64 formula with the smoothed target y * (1 - alpha) + alpha / 2."""
    t = targets.double() * (1 - alpha) + alpha / 2
    log_s = torch.log(torch.sigmoid(logits.double()))
    log_1s = torch.log(torch.sigmoid(-logits.double()))
    p = 1.0 if pos_weight is None else pos_weight.double()
    w = 1.0 if weight is None else weight.double()
    return -(w * (p * t * log_s + (1 - t) * log_1s))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0, 1),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    weighted=st.booleans(),
)
def test_matches_hand_computed_reference(seed, alpha, reduction, weighted):
    g, logits, targets = _case(seed)
    weight = torch.rand(4, 1, generator=g, dtype=torch.float64) if weighted else None
    pos_weight = torch.rand(3, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    got = ls.binary_cross_entropy_with_logits(
        logits, targets, alpha=alpha, weight=weight, pos_weight=pos_weight, reduction=reduction
    )
    rows = _reference(logits, targets, alpha, weight, pos_weight)
    expected = {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]
    torch.testing.assert_close(got, expected)


def test_equals_pytorch_on_smoothed_targets_with_gradient():
    _, logits, targets = _case(1)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ls.binary_cross_entropy_with_logits(a, targets, alpha=0.2).backward()
    F.binary_cross_entropy_with_logits(b, targets * 0.8 + 0.1).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_keras_value_by_hand():
    # y = 1, alpha = 0.2 -> t = 0.9; logit 0 -> loss = log 2 whatever t is; logit 2:
    t = 0.9
    expected = -(
        t * torch.log(torch.sigmoid(torch.tensor(2.0)))
        + (1 - t) * torch.log(torch.sigmoid(torch.tensor(-2.0)))
    )
    got = ls.binary_cross_entropy_with_logits(torch.tensor([2.0]), torch.tensor([1.0]), alpha=0.2)
    torch.testing.assert_close(got, expected)


def test_alpha_one_gives_one_half_targets_and_extreme_logits_are_finite():
    logits = torch.tensor([[-1e4, 0.0, 1e4]], requires_grad=True)
    loss = ls.binary_cross_entropy_with_logits(
        logits, torch.tensor([[1.0, 0.0, 1.0]]), alpha=1.0, reduction="none"
    )
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad, torch.sigmoid(logits.detach()) - 0.5)


def test_int_and_bool_targets_and_half_logits():
    _, logits, targets = _case(2)
    expected = ls.binary_cross_entropy_with_logits(logits.float(), targets.float(), alpha=0.1)
    torch.testing.assert_close(
        ls.binary_cross_entropy_with_logits(logits.float(), targets.bool(), alpha=0.1), expected
    )
    half = ls.binary_cross_entropy_with_logits(logits.half(), targets.long(), alpha=0.1)
    assert half.dtype == torch.float32


def test_module_repr_echoes_its_options():
    # Function == module and pickling: test_loss_contract.py.
    module = ls.BCEWithLogitsLoss(alpha=0.1, pos_weight=torch.full((3,), 2.0, dtype=torch.float64))
    assert repr(module) == "BCEWithLogitsLoss(alpha=0.1, reduction='mean')"


def test_inputs_are_not_mutated():
    _, logits, targets = _case(4)
    l0, t0 = logits.clone(), targets.clone()
    ls.binary_cross_entropy_with_logits(logits, targets, alpha=0.3)
    assert torch.equal(logits, l0) and torch.equal(targets, t0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"targets": torch.ones(4)}, ValueError, "shape"),
        ({"targets": torch.full((4, 3), 2.0)}, ValueError, r"\[0, 1\]"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"weight": torch.ones(5)}, ValueError, "broadcasts"),
        ({"pos_weight": -torch.ones(3)}, ValueError, "non-negative"),
        ({"logits": torch.zeros(4, 3, dtype=torch.long)}, TypeError, "floating"),
    ],
    ids=["shape", "range", "alpha", "reduction", "weight-shape", "pos-weight-sign", "int-logits"],
)
def test_bad_inputs_are_refused(kwargs, error, match):
    args = {"logits": torch.zeros(4, 3), "targets": torch.ones(4, 3)}
    args.update(kwargs)
    logits, targets = args.pop("logits"), args.pop("targets")
    with pytest.raises(error, match=match):
        ls.binary_cross_entropy_with_logits(logits, targets, **args)


def test_label_smoothing_multilabel_task_feeds_plain_bce():
    """LabelSmoothing(task='multilabel') then plain BCE equals our BCE with alpha."""
    _, logits, targets = _case(5)
    state = ls.State(batch=(torch.zeros(4, 2), targets), outputs=logits)
    engine = ls.Engine(state, [ls.LabelSmoothing(0.2, task="multilabel")])
    with engine.loss_events():
        state.loss = F.binary_cross_entropy_with_logits(state.outputs, state.batch[1])
    torch.testing.assert_close(state.loss, ls.binary_cross_entropy_with_logits(logits, targets, alpha=0.2))
    assert state.batch[1] is targets


def test_label_smoothing_multilabel_refuses_index_targets():
    state = ls.State(batch=(torch.zeros(2, 2), torch.tensor([0, 1])), outputs=torch.zeros(2, 3))
    engine = ls.Engine(state, [ls.LabelSmoothing(0.2, task="multilabel")])
    with pytest.raises(ValueError, match="multilabel"), engine.loss_events():
        pass

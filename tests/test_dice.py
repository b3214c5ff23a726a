"""Soft Dice loss: L1 intersection, smoothing, ignored pixels, all target forms, DiceCELoss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import _reference as ref
import labelsmooth as ls
from labelsmooth import SoftTargets

C = 4
IGNORE = 255


def _case(seed, n=2, spatial=(3, 5), ignore=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n, *spatial), generator=g)
    if ignore:
        y = torch.where(torch.rand(y.shape, generator=g) < 0.25, IGNORE, y)
    logits = torch.randn(n, C, *spatial, generator=g, dtype=torch.float64)
    return g, y, logits


def _reference(logits, y, alpha, smooth=1e-5):
    """The float64 soft Dice of the smoothed target on the kept pixels (``_reference.dice_loss``)."""
    q = ref.smooth(ref.one_hot(y, C, ignore_index=IGNORE, dim=1), alpha, dim=1)
    return ref.dice_loss(logits, q, keep=y != IGNORE, smooth_term=smooth)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.floats(0, 1), reduction=st.sampled_from(["none", "mean", "sum"]))
def test_matches_reference_with_ignored_pixels_masked_after_smoothing(seed, alpha, reduction):
    _, y, logits = _case(seed)
    got = ls.dice_loss(logits, y, alpha=alpha, ignore_index=IGNORE, reduction=reduction)
    rows = _reference(logits, y, alpha)
    expected = {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]
    torch.testing.assert_close(got, expected)


def test_equals_product_form_for_one_hot_targets():
    _, y, logits = _case(1, ignore=False)
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(y, C).movedim(-1, 1).double()
    inter = (probs * onehot).sum((2, 3))
    expected = 1 - (2 * inter + 1e-5) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)
    torch.testing.assert_close(ls.dice_loss(logits, y, reduction="none"), expected)


def test_logits_at_ignored_pixels_do_not_matter():
    """Composer's Dice loses the mask once targets are smoothed; here it does not."""
    _, y, logits = _case(2)
    changed = torch.where((y == IGNORE).unsqueeze(1), torch.randn_like(logits) * 10, logits)
    a = ls.dice_loss(logits, y, alpha=0.2, ignore_index=IGNORE)
    b = ls.dice_loss(changed, y, alpha=0.2, ignore_index=IGNORE)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("alpha", [0.1, 0.4], ids=["a=0.1", "a=0.4"])
def test_minimum_at_prediction_equal_to_soft_target(alpha):
    _, y, _ = _case(3, ignore=False)
    target = ls.smooth_labels(torch.zeros(2, C, 3, 5, dtype=torch.float64), y, alpha)
    at_target = ls.dice_loss(target, y, alpha=alpha, softmax=False, smooth=0.0)
    assert float(at_target) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        other = torch.softmax(
            target.log() + 0.3 * torch.randn(target.shape, generator=g, dtype=torch.float64), 1
        )
        assert ls.dice_loss(other, y, alpha=alpha, softmax=False, smooth=0.0) > at_target
    # The product form would prefer the hard prediction; this one does not.
    hard = F.one_hot(y, C).movedim(-1, 1).double()
    assert ls.dice_loss(hard, y, alpha=alpha, softmax=False, smooth=0.0) > at_target


def test_index_dense_and_soft_targets_agree():
    _, y, logits = _case(4)
    dense = SoftTargets.from_index(y, num_classes=C, ignore_index=IGNORE).to_dense(dtype=torch.float64)
    soft = SoftTargets.from_index(y, ignore_index=IGNORE)
    expected = ls.dice_loss(logits, y, alpha=0.2, ignore_index=IGNORE)
    torch.testing.assert_close(ls.dice_loss(logits, dense, alpha=0.2), expected)
    torch.testing.assert_close(ls.dice_loss(logits, soft, alpha=0.2), expected)
    torch.testing.assert_close(ls.dice_loss(logits, soft.smooth(0.2)), expected)


def test_batch_dice_pools_the_batch():
    _, y, logits = _case(5, ignore=False)
    pooled = ls.dice_loss(logits.movedim(1, 0).reshape(1, C, -1), y.reshape(1, -1), reduction="none")
    torch.testing.assert_close(ls.dice_loss(logits, y, batch=True, reduction="none"), pooled[0])


def test_gradients_are_finite_and_inputs_untouched():
    _, y, logits = _case(6)
    y0, z0 = y.clone(), logits.clone()
    z = logits.clone().requires_grad_()
    ls.dice_loss(z, y, alpha=0.1, ignore_index=IGNORE).backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(y, y0) and torch.equal(logits, z0)


def test_dice_ce_ignores_the_same_pixels_in_both_terms():
    # Function == module and pickling for every loss: test_loss_contract.py.
    _, y, logits = _case(7)
    both = ls.DiceCELoss(alpha=0.1, ignore_index=IGNORE, lambda_dice=0.5)
    keep = y != IGNORE
    q = ref.smooth(ref.one_hot(y, C, ignore_index=IGNORE, dim=1), 0.1, dim=1)
    expected = F.cross_entropy(logits, y, ignore_index=IGNORE, label_smoothing=0.1) + 0.5 * ref.dice_loss(
        logits, q, keep=keep
    ).mean()
    torch.testing.assert_close(both(logits, y), expected)
    assert "lambda_dice=0.5" in repr(both) and "ignore_index=255" in repr(ls.DiceLoss(ignore_index=IGNORE))


def test_dice_ce_with_soft_targets_from_cutmix_matches_dense():
    _, y, logits = _case(8, ignore=False)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[:, 1:, 2:] = True
    soft = SoftTargets.from_index(y).paste(torch.tensor([1, 0]), mask)
    dense = soft.to_dense(C, torch.float64)
    loss = ls.DiceCELoss(alpha=0.2)
    torch.testing.assert_close(loss(logits, soft), loss(logits, dense))


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda: ls.dice_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), smooth=-1.0),
            ValueError,
        ),
        (lambda: ls.dice_loss(torch.zeros(2, 3, 4), torch.zeros(2, 5, dtype=torch.long)), ValueError),
        (lambda: ls.dice_loss(torch.zeros(2, 3, 4), torch.full((2, 4), 7)), ValueError),
        (lambda: ls.dice_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long)), ValueError),
        (lambda: ls.DiceCELoss(reduction="none"), ValueError),
        (lambda: ls.DiceLoss(softmax=1), TypeError),
        (lambda: ls.DiceCELoss(lambda_ce=-1.0), ValueError),
    ],
    ids=["smooth", "shape", "index-range", "no-class-dim", "dicece-none", "softmax-flag", "lambda"],
)
def test_bad_arguments_are_refused(call, error):
    with pytest.raises(error):
        call()


def test_partly_ignored_mixup_pixels_count_with_their_mass():
    y = torch.tensor([[[0, IGNORE], [1, 2]]])
    soft = SoftTargets.from_index(y, ignore_index=IGNORE)
    mixed = SoftTargets(
        torch.stack([y, torch.tensor([[[1, 1], [IGNORE, 2]]])]),
        torch.tensor([0.75, 0.25]),
        ignore_index=IGNORE,
    )
    dense = mixed.to_dense(C, torch.float64)
    mass = dense.sum(1, keepdim=True)
    normalized = torch.where(mass > 0, dense / mass.clamp_min(1e-12), torch.full_like(dense, 1 / C))
    assert float(
        ls.dice_loss(normalized, mixed, softmax=False, smooth=1e-12, reduction="sum")
    ) == pytest.approx(0, abs=1e-12)
    assert ls.dice_loss(normalized, soft, softmax=False, smooth=1e-12) > 1e-3


def test_moving_the_class_dim_equals_moveaxis():
    _, y, logits = _case(9)
    expected = ls.dice_loss(logits, y, alpha=0.1, ignore_index=IGNORE, reduction="none")
    last = ls.dice_loss(logits.movedim(1, -1), y, alpha=0.1, ignore_index=IGNORE, reduction="none", dim=-1)
    torch.testing.assert_close(last, expected)
    dense = ls.smooth_labels(logits, y, 0.1, ignore_index=IGNORE)
    torch.testing.assert_close(
        ls.dice_loss(logits.movedim(1, -1), dense.movedim(1, -1), dim=-1, reduction="none"), expected
    )


@pytest.mark.parametrize(
    ("check", "targets"),
    [
        ("check_index_values", torch.tensor([[0, 2, 1, 0], [1, 1, 2, 0]])),
        ("check_dense_values", torch.full((2, 3, 4), 1 / 3)),
    ],
    ids=["index", "dense"],
)
def test_target_values_are_checked_once_per_call(monkeypatch, check, targets):
    """Each content check is a host read (a sync on a GPU): one per call, in smooth_labels."""
    from labelsmooth import _validation

    calls = []
    original = getattr(_validation, check)

    def counted(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(_validation, check, counted)
    ls.dice_loss(torch.zeros(2, 3, 4), targets, alpha=0.1)
    assert len(calls) == 1 and calls[0] is targets

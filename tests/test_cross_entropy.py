"""cross_entropy against PyTorch's own label_smoothing and the dense float64 oracle (``_reference``).

Function equals module and pickling: ``test_loss_contract``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import _reference as ref
import labelsmooth as ls

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def problems(draw):
    """Random logits (N, C, d...), index targets with some ignored, alpha, weight and reduction."""
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 9))
    extra = draw(st.lists(st.integers(1, 3), max_size=2))
    shape = (n, c, *extra)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    targets = torch.randint(0, c, (n, *extra), generator=gen)
    ignore = torch.rand(targets.shape, generator=gen) < draw(st.sampled_from([0.0, 0.3]))
    targets = torch.where(ignore, torch.full_like(targets, -100), targets)
    if not bool((targets != -100).any()):
        targets.view(-1)[0] = 0  # PyTorch's mean is NaN on all-ignored batches
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.1 if draw(st.booleans()) else None
    alpha = draw(st.sampled_from([0.0, 0.1, 0.37, 1.0]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return logits, targets, weight, alpha, reduction


@SETTINGS
@given(problems())
def test_index_targets_match_pytorch_loss_and_gradient(problem):
    logits, targets, weight, alpha, reduction = problem
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = ls.cross_entropy(ours_in, targets, alpha=alpha, weight=weight, reduction=reduction)
    ref = F.cross_entropy(ref_in, targets, weight=weight, reduction=reduction, label_smoothing=alpha)
    torch.testing.assert_close(ours, ref)
    grad_out = torch.rand_like(ref) + 0.5  # not 1: the "not last layer" case
    ours.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


@SETTINGS
@given(problems())
def test_smoothed_dense_targets_equal_index_targets_without_weight(problem):
    logits, targets, _, alpha, reduction = problem
    dense = ls.smooth_labels(logits, targets, alpha, ignore_index=-100)
    from_dense = ls.cross_entropy(logits, dense, reduction=reduction)
    from_index = ls.cross_entropy(logits, targets, alpha=alpha, reduction=reduction)
    torch.testing.assert_close(from_dense, from_index)


@SETTINGS
@given(problems())
def test_dense_targets_match_float64_formula(problem):
    logits, targets, weight, alpha, reduction = problem
    q = ref.smooth(ref.one_hot(targets, logits.shape[1], dim=1), alpha, dim=1)
    expected = ref.cross_entropy(logits, q, weight=weight, dim=1, reduction=reduction)
    torch.testing.assert_close(ls.cross_entropy(logits, q, weight=weight, reduction=reduction), expected)


def test_one_hot_dense_with_weight_matches_pytorch_index_rule():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=gen)
    targets = torch.tensor([0, 1, 2, 3, 3, 1])
    weight = torch.tensor([0.2, 1.0, 3.0, 0.5])
    one_hot = F.one_hot(targets, 4).float()
    torch.testing.assert_close(
        ls.cross_entropy(logits, one_hot, weight=weight),
        F.cross_entropy(logits, targets, weight=weight),
    )


def test_gradcheck_float64_index_and_dense():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[0, 4], [-100, 2], [3, 3]])
    weight = torch.rand(5, generator=gen, dtype=torch.float64) + 0.1
    torch.autograd.gradcheck(lambda z: ls.cross_entropy(z, targets, alpha=0.2, weight=weight), (logits,))
    dense = ls.smooth_labels(logits, targets, 0.2, ignore_index=-100)
    torch.autograd.gradcheck(lambda z: ls.cross_entropy(z, dense, weight=weight), (logits,))


@pytest.mark.parametrize("reduction", ["sum", "none", "mean"])
def test_gradient_with_respect_to_dense_targets_matches_the_float64_formula(reduction):
    """The docstring's d loss_i / d t_ic = (1 - a) w_c (-log p_ic) + a sum_c' u_c' w_c' (-log p_ic'),
    times the incoming gradient, and under "mean" the divisor D = sum_ic w_c q_ic's term."""
    gen = torch.Generator().manual_seed(7)
    alpha, n, c = 0.3, 4, 5
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64)
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    prior = torch.softmax(torch.randn(c, generator=gen, dtype=torch.float64), 0)
    # Rows that do not sum to 1: the smoothing keeps each row's mass.
    dense = (torch.rand(n, c, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    grad_out = torch.rand(n, generator=gen, dtype=torch.float64) if reduction == "none" else torch.tensor(0.7)
    loss = ls.cross_entropy(logits, dense, alpha=alpha, weight=weight, prior=prior, reduction=reduction)
    loss.backward(grad_out)

    nll = -torch.log_softmax(logits, 1)
    smoothing_term = (prior * weight * nll).sum(1, keepdim=True)
    row_gradient = (1 - alpha) * weight * nll + alpha * smoothing_term
    t = dense.detach()
    q = (1 - alpha) * t + alpha * prior * t.sum(1, keepdim=True)
    if reduction == "none":
        expected = grad_out[:, None] * row_gradient
    elif reduction == "sum":
        expected = grad_out * row_gradient
    else:
        divisor = (weight * q).sum()
        mean = (weight * q * nll).sum() / divisor
        mass = (1 - alpha) * weight + alpha * (prior * weight).sum()
        expected = grad_out * (row_gradient - mean * mass) / divisor
    torch.testing.assert_close(dense.grad, expected, rtol=1e-12, atol=1e-12)


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = ls.cross_entropy(logits, torch.full((4,), -100), alpha=0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    dense = torch.zeros(4, 3)
    assert ls.cross_entropy(logits.detach(), dense).item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_alpha_zero_equals_plain_cross_entropy(reduction):
    gen = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(7, 6, generator=gen), torch.randint(0, 6, (7,), generator=gen)
    torch.testing.assert_close(
        ls.cross_entropy(logits, targets, reduction=reduction),
        F.cross_entropy(logits, targets, reduction=reduction),
    )


def test_alpha_one_is_cross_entropy_against_uniform():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    expected = -torch.log_softmax(logits, 1).mean(1).mean()
    targets = torch.randint(0, 8, (5,), generator=gen)
    torch.testing.assert_close(ls.cross_entropy(logits, targets, alpha=1.0), expected)


def test_ignoring_positions_equals_dropping_them():
    gen = torch.Generator().manual_seed(5)
    logits, targets = torch.randn(10, 5, generator=gen), torch.randint(0, 5, (10,), generator=gen)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)
    masked = torch.where(keep, targets, -100)
    torch.testing.assert_close(
        ls.cross_entropy(logits, masked, alpha=0.2),
        ls.cross_entropy(logits[keep], targets[keep], alpha=0.2),
    )


@pytest.mark.parametrize("dim", [1, 2, -1], ids=["dim1", "dim2", "dim-1"])
def test_moving_the_class_dim_equals_moveaxis(dim):
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    moved = logits.movedim(1, dim)
    targets = torch.randint(0, 3, (2, 4, 5), generator=gen)
    expected = ls.cross_entropy(logits, targets, alpha=0.1, reduction="none")
    torch.testing.assert_close(
        ls.cross_entropy(moved, targets, alpha=0.1, reduction="none", dim=dim), expected
    )


def test_language_model_layout_dim_minus_one():
    gen = torch.Generator().manual_seed(7)
    logits, targets = torch.randn(2, 6, 11, generator=gen), torch.randint(0, 11, (2, 6), generator=gen)
    torch.testing.assert_close(
        ls.cross_entropy(logits, targets, alpha=0.1, dim=-1),
        F.cross_entropy(logits.transpose(1, 2), targets, label_smoothing=0.1),
    )


def test_others_convention_puts_one_minus_alpha_on_the_true_class():
    gen = torch.Generator().manual_seed(8)
    logits, targets = torch.randn(4, 5, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    q = torch.full((4, 5), 0.2 / 4, dtype=torch.float64)
    q[torch.arange(4), targets] = 0.8
    expected = ref.cross_entropy(logits, q, dim=1)
    torch.testing.assert_close(ls.cross_entropy(logits, targets, alpha=0.2, convention="others"), expected)
    torch.testing.assert_close(ls.smooth_labels(logits, targets, 0.2, convention="others"), q)


def test_prior_replaces_uniform():
    gen = torch.Generator().manual_seed(9)
    logits, targets = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = 0.7 * F.one_hot(targets, 3).double() + 0.3 * prior
    expected = ref.cross_entropy(logits, q, dim=1)
    torch.testing.assert_close(ls.cross_entropy(logits, targets, alpha=0.3, prior=prior), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_16_bit_logits_computed_in_float32_and_finite_at_1e4(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype=dtype, requires_grad=True)
    targets = torch.tensor([1, 1])
    loss = ls.cross_entropy(logits, targets, alpha=0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    expected = F.cross_entropy(logits.detach().float(), targets, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_extreme_float32_logits_have_finite_gradients():
    logits = torch.tensor([[1e4, -1e4, 3.0]], requires_grad=True)
    ls.cross_entropy(logits, torch.tensor([2]), alpha=0.1).backward()
    assert torch.isfinite(logits.grad).all()


def test_soft_cross_entropy_is_cross_entropy_without_smoothing():
    gen = torch.Generator().manual_seed(11)
    logits, targets = torch.randn(5, 4, generator=gen), torch.tensor([0, 3, -100, 1, 2])
    torch.testing.assert_close(ls.soft_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_inputs_are_not_mutated():
    gen = torch.Generator().manual_seed(12)
    logits, targets = torch.randn(5, 4, generator=gen), torch.tensor([0, 3, -100, 1, 2])
    dense, weight = torch.rand(5, 4, generator=gen), torch.rand(4, generator=gen)
    copies = [t.clone() for t in (logits, targets, dense, weight)]
    ls.cross_entropy(logits, targets, alpha=0.3, weight=weight)
    ls.cross_entropy(logits, dense, alpha=0.3, weight=weight)
    ls.smooth_labels(logits, targets, 0.3, ignore_index=-100)
    ls.smooth_labels(logits, dense, 0.3)
    for before, after in zip(copies, (logits, targets, dense, weight), strict=True):
        assert torch.equal(before, after)

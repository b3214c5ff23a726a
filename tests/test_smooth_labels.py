"""smooth_labels and ensure_targets_one_hot against Composer's formula, computed densely."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import labelsmooth as ls


def _composer_formula(targets, num_classes, alpha, dim=1):
    """onehot * (1 - alpha) + alpha / C, in float64, with the class dim at ``dim``."""
    one_hot = F.one_hot(targets, num_classes).double().movedim(-1, dim)
    return one_hot * (1 - alpha) + alpha / num_classes


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(4,), (2, 5, 5), (1, 3, 2, 2)]),
    num_classes=st.integers(1, 12),
    alpha=st.floats(0.0, 1.0),
)
def test_index_targets_follow_composer_formula(seed, shape, num_classes, alpha):
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, shape, generator=gen)
    logits = torch.zeros(shape[0], num_classes, *shape[1:], dtype=torch.float64)
    smoothed = ls.smooth_labels(logits, targets, alpha)
    torch.testing.assert_close(smoothed, _composer_formula(targets, num_classes, alpha))
    # Valid targets sum to 1 up to rounding: no "less than 1 total probability" warning exists.
    torch.testing.assert_close(smoothed.sum(1), torch.ones(targets.shape, dtype=torch.float64))


def test_dense_targets_are_smoothed_with_the_same_formula():
    gen = torch.Generator().manual_seed(0)
    dense = torch.softmax(torch.randn(6, 5, generator=gen, dtype=torch.float64), 1)
    expected = dense * 0.8 + 0.2 / 5
    torch.testing.assert_close(ls.smooth_labels(torch.zeros(6, 5, dtype=torch.float64), dense, 0.2), expected)


@pytest.mark.parametrize("ignore_index", [255, -100, -1], ids=["255", "-100", "-1"])
def test_ignored_pixels_become_all_zero_rows(ignore_index):
    targets = torch.tensor([[[0, ignore_index], [2, 1]]])
    smoothed = ls.smooth_labels(torch.zeros(1, 3, 2, 2), targets, 0.1, ignore_index=ignore_index)
    assert torch.equal(smoothed[0, :, 0, 1], torch.zeros(3))
    torch.testing.assert_close(smoothed[0, :, 1, 0], torch.tensor([0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float64, torch.float64)],
    ids=["fp16", "bf16", "fp64"],
)
def test_result_dtype(dtype, expected):
    smoothed = ls.smooth_labels(torch.zeros(2, 3, dtype=dtype), torch.tensor([0, 1]), 0.1)
    assert smoothed.dtype == expected


def test_class_dim_last_for_language_models():
    targets = torch.tensor([[1, 0, 2]])
    smoothed = ls.smooth_labels(torch.zeros(1, 3, 4), targets, 0.2, dim=-1)
    torch.testing.assert_close(smoothed, _composer_formula(targets, 4, 0.2, dim=-1).float())


def test_ensure_targets_one_hot():
    logits = torch.zeros(3, 4)
    one_hot = ls.ensure_targets_one_hot(logits, torch.tensor([3, 0, 255]), ignore_index=255)
    assert torch.equal(one_hot, torch.tensor([[0.0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]))
    dense = torch.rand(3, 4)
    assert ls.ensure_targets_one_hot(logits, dense) is dense


def test_alpha_one_gives_the_prior():
    prior = torch.tensor([0.7, 0.2, 0.1])
    smoothed = ls.smooth_labels(torch.zeros(2, 3), torch.tensor([2, 1]), 1.0, prior=prior)
    torch.testing.assert_close(smoothed, prior.expand(2, 3))


def test_conventions_convert_into_each_other():
    num_classes, alpha = 10, 0.1
    logits, targets = torch.zeros(1, num_classes, dtype=torch.float64), torch.tensor([4])
    others = ls.smooth_labels(logits, targets, alpha, convention="others")
    uniform = ls.smooth_labels(logits, targets, alpha * num_classes / (num_classes - 1))
    torch.testing.assert_close(others, uniform)
    assert others[0, 4].item() == pytest.approx(1 - alpha)


def test_no_int64_one_hot_is_built():
    """Composer builds an int64 one-hot first (7.5 GB for a 16 x 150 x 512 x 512 batch)."""
    from torch.profiler import ProfilerActivity, profile

    logits = torch.zeros(2, 150, 32, 32)
    targets = torch.randint(0, 150, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        smoothed = ls.smooth_labels(logits, targets, 0.1)
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert largest == smoothed.numel() * smoothed.element_size()

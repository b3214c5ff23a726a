"""SoftTargets: dense equivalence, composition, losses without dense targets, errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

import _reference as ref
import labelsmooth as ls
from labelsmooth import SoftTargets

IGNORE = -100


def _case(seed, n=6, c=5, spatial=(), ignore=True):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n, *spatial), generator=g)
    if ignore:
        y = torch.where(torch.rand(y.shape, generator=g) < 0.2, IGNORE, y)
    logits = torch.randn(n, *spatial, c, generator=g, dtype=torch.float64)  # class dim last
    perm = torch.randperm(n, generator=g)
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    return g, y, logits, perm, lam


def _lam_along(lam, ndim):
    return lam.reshape(-1, *([1] * (ndim - 1)))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0, 1),
    spatial=st.sampled_from([(), (3,), (2, 3)]),
    order=st.sampled_from(["mix_then_smooth", "smooth_then_mix"]),
)
def test_to_dense_equals_dense_construction(seed, alpha, spatial, order):
    _, y, _, perm, lam = _case(seed, spatial=spatial)
    base = SoftTargets.from_index(y, num_classes=5)
    t = base.mix(perm, lam).smooth(alpha) if order == "mix_then_smooth" else base.smooth(alpha).mix(perm, lam)
    q0 = ref.one_hot(y, 5)
    lam_b = _lam_along(lam, y.dim()).unsqueeze(-1)
    expected = ref.smooth((1 - lam_b) * q0 + lam_b * q0[perm], alpha)
    torch.testing.assert_close(t.to_dense(dtype=torch.float64, dim=-1), expected)
    torch.testing.assert_close(t.to_dense(dtype=torch.float64), expected.movedim(-1, 1))


@pytest.mark.parametrize("smooth_first", [True, False], ids=["smooth-paste", "paste-smooth"])
@pytest.mark.parametrize("spatial", [(), (4, 3)], ids=["classification", "segmentation"])
def test_paste_equals_dense_where(spatial, smooth_first):
    g, y, _, perm, _ = _case(1, spatial=spatial)
    mask = torch.rand(y.shape, generator=g) < 0.5
    base = SoftTargets.from_index(y, num_classes=5)
    t = base.smooth(0.1).paste(perm, mask) if smooth_first else base.paste(perm, mask).smooth(0.1)
    q0 = ref.one_hot(y, 5)
    expected = ref.smooth(torch.where(mask.unsqueeze(-1), q0[perm], q0), 0.1)
    torch.testing.assert_close(t.to_dense(dtype=torch.float64, dim=-1), expected)
    assert t.num_components == 1  # a new index map, not a wider mixture


@pytest.mark.parametrize("second", [0.0, 0.3, 1.0], ids=["a2=0", "a2=0.3", "a2=1"])
def test_smooth_composes_to_one_minus_product(second):
    _, y, _, _, _ = _case(2, ignore=False)
    t = SoftTargets.from_index(y, num_classes=5).smooth(0.2).smooth(second)
    assert t.alpha == pytest.approx(1 - 0.8 * (1 - second))
    expected = ref.smooth(ref.smooth(ref.one_hot(y, 5), 0.2), second)
    torch.testing.assert_close(t.to_dense(dtype=torch.float64, dim=-1), expected)


def test_smooth_with_a_different_prior_is_refused():
    t = SoftTargets.from_index(torch.tensor([0, 1]), num_classes=2).smooth(0.1)
    with pytest.raises(ValueError, match="prior"):
        t.smooth(0.1, prior=torch.tensor([0.9, 0.1]))
    # Same prior composes; alpha 0 keeps it.
    prior = torch.tensor([0.9, 0.1])
    p = (
        SoftTargets.from_index(torch.tensor([0, 1]), prior=prior)
        .smooth(0.1, prior=prior)
        .smooth(0.2, prior=prior)
    )
    expected = ref.smooth(ref.one_hot(torch.tensor([0, 1]), 2), 1 - 0.9 * 0.8, prior=prior)
    torch.testing.assert_close(p.to_dense(dtype=torch.float64), expected)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    alpha=st.floats(0, 1),
    extra=st.floats(0, 1),
    spatial=st.sampled_from([(), (3,), (2, 2)]),
    weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_cross_entropy_equals_dense_float64_reference(seed, alpha, extra, spatial, weighted, reduction):
    g, y, logits, perm, lam = _case(seed, spatial=spatial)
    weight = torch.rand(5, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    t = SoftTargets.from_index(y).mix(perm, lam).smooth(alpha)
    got = ls.cross_entropy(logits.movedim(-1, 1), t, alpha=extra, weight=weight, reduction=reduction)
    q0 = ref.one_hot(y, 5)
    lam_b = _lam_along(lam, y.dim()).unsqueeze(-1)
    q = ref.smooth(ref.smooth((1 - lam_b) * q0 + lam_b * q0[perm], alpha), extra)
    torch.testing.assert_close(got, ref.cross_entropy(logits, q, weight=weight, reduction=reduction))


def test_plain_index_soft_targets_equal_pytorch():
    _, y, logits, _, _ = _case(3, spatial=(2,))
    z = logits.movedim(-1, 1)
    got = ls.cross_entropy(z, SoftTargets.from_index(y), alpha=0.1)
    torch.testing.assert_close(got, F.cross_entropy(z, y, label_smoothing=0.1))


def test_gradient_equals_dense_gradient():
    _, y, logits, perm, lam = _case(4)
    t = SoftTargets.from_index(y).mix(perm, lam).smooth(0.2)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ls.cross_entropy(a, t).backward()
    q = ref.smooth((1 - lam[:, None]) * ref.one_hot(y, 5) + lam[:, None] * ref.one_hot(y, 5)[perm], 0.2)
    ref.cross_entropy(b, q).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_soft_cross_entropy_and_module_accept_soft_targets():
    _, y, logits, perm, lam = _case(5)
    t = SoftTargets.from_index(y).mix(perm, lam)
    expected = ls.cross_entropy(logits, t.to_dense(5))
    torch.testing.assert_close(ls.soft_cross_entropy(logits, t), expected)
    torch.testing.assert_close(ls.CrossEntropyLoss()(logits, t), expected)


def test_smooth_labels_keeps_soft_targets_structured():
    _, y, logits, _, _ = _case(6)
    t = ls.smooth_labels(logits, SoftTargets.from_index(y), 0.3)
    assert isinstance(t, SoftTargets) and t.alpha == pytest.approx(0.3)
    torch.testing.assert_close(
        t.to_dense(5, torch.float64), ls.smooth_labels(logits, y, 0.3, ignore_index=IGNORE)
    )
    dense = ls.ensure_targets_one_hot(logits, SoftTargets.from_index(y))
    torch.testing.assert_close(dense, ref.one_hot(y, 5))


def test_fully_ignored_positions_are_zero_rows_and_left_out_of_the_mean():
    y = torch.tensor([0, IGNORE, 2])
    t = SoftTargets.from_index(y, num_classes=3).smooth(0.5)
    assert t.to_dense()[1].abs().sum() == 0
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    kept = ls.cross_entropy(logits[[0, 2]], SoftTargets.from_index(y[[0, 2]]), alpha=0.5)
    torch.testing.assert_close(ls.cross_entropy(logits, t), kept)


def test_getitem_indexes_the_batch():
    _, y, _, perm, lam = _case(7, spatial=(3,))
    t = SoftTargets.from_index(y, num_classes=5).mix(perm, lam).smooth(0.1)
    dense = t.to_dense()
    torch.testing.assert_close(t[1:4].to_dense(), dense[1:4])
    torch.testing.assert_close(t[2].to_dense(dim=0), dense[2])
    torch.testing.assert_close(t[torch.tensor([0, 5])].to_dense(), dense[[0, 5]])
    torch.testing.assert_close(t[:, 1].to_dense(), dense[:, :, 1])


def test_to_device_keeps_values():
    t = SoftTargets.from_index(torch.tensor([1, 0]), num_classes=2, prior=torch.tensor([0.5, 0.5])).smooth(
        0.2
    )
    moved = t.to("meta")
    assert moved.device.type == "meta" and moved.prior is not None and moved.prior.device.type == "meta"
    back = t.to(torch.device("cpu"))
    torch.testing.assert_close(back.to_dense(), t.to_dense())


def test_operations_never_mutate_the_callers_tensors():
    _, y, _, perm, lam = _case(8, spatial=(2,))
    y0, perm0, lam0 = y.clone(), perm.clone(), lam.clone()
    mask = torch.zeros(y.shape, dtype=torch.bool)
    mask[:, 0] = True
    t = SoftTargets.from_index(y, num_classes=5)
    t.mix(perm, lam).smooth(0.3).paste(perm, mask).to_dense()
    ls.cross_entropy(torch.zeros(6, 5, 2), t.smooth(0.1))
    assert torch.equal(y, y0) and torch.equal(perm, perm0) and torch.equal(lam, lam0)
    assert t.indices.data_ptr() == y.data_ptr()  # a view of the caller's map, never written


def test_no_dense_target_is_allocated_for_a_large_class_count():
    n, c = 64, 40_000  # more than one chunk of the chunked kernel, whose buffers are chunk-sized
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    t = SoftTargets.from_index(y).mix(torch.randperm(n, generator=g), 0.3).smooth(0.1)

    def big_allocations(fn):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        return sum(1 for e in prof.events() if e.cpu_memory_usage >= n * c * 4)

    index_path = big_allocations(lambda: ls.cross_entropy(logits, y, alpha=0.1))
    soft_path = big_allocations(lambda: ls.cross_entropy(logits, t, alpha=0.1))
    dense_path = big_allocations(lambda: ls.cross_entropy(logits, t.to_dense(c), alpha=0.1))
    assert soft_path <= index_path < dense_path


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weights": torch.tensor([[0.5, 0.7]])}, ValueError, "sum to 1"),
        (
            {"weights": torch.tensor([[1.5, 1.0], [-0.5, 0.0]]), "indices": torch.tensor([[0, 1], [1, 0]])},
            ValueError,
            "non-negative",
        ),
        ({"weights": torch.tensor([[1, 1]])}, TypeError, "floating"),
        ({"weights": torch.ones(1, 3)}, ValueError, "broadcasts"),
        ({"indices": torch.tensor([[0.0, 1.0]])}, TypeError, "integer"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"alpha": float("nan")}, ValueError, "alpha"),
        ({"num_classes": 2, "indices": torch.tensor([[0, 2]])}, ValueError, "class indices"),
        ({"num_classes": 3, "prior": torch.tensor([0.5, 0.5])}, ValueError, "prior"),
        ({"prior": torch.tensor([0.5, 0.6])}, ValueError, "sum to 1"),
    ],
    ids=[
        "sum",
        "negative",
        "int-weights",
        "shape",
        "float-indices",
        "alpha",
        "nan",
        "range",
        "prior-size",
        "prior-sum",
    ],
)
def test_invalid_states_are_refused(kwargs, error, match):
    args = {"indices": torch.tensor([[0, 1]]), "weights": torch.ones(1, 2)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SoftTargets(**args)


def test_invalid_operations_are_refused():
    t = SoftTargets.from_index(torch.tensor([0, 1, 2]), num_classes=3)
    with pytest.raises(ValueError, match="lam"):
        t.mix(torch.tensor([2, 1, 0]), 1.2)
    with pytest.raises(ValueError, match="perm"):
        t.mix(torch.tensor([1, 0]), 0.5)
    with pytest.raises(TypeError, match="mask"):
        t.paste(torch.tensor([2, 1, 0]), torch.ones(3))
    with pytest.raises(ValueError, match="batch shape"):
        ls.cross_entropy(torch.zeros(2, 3), t)
    with pytest.raises(ValueError, match="4 classes"):
        ls.cross_entropy(torch.zeros(3, 4), t)
    with pytest.raises(ValueError, match="num_classes"):
        SoftTargets.from_index(torch.tensor([0])).to_dense()
    with pytest.raises(ValueError, match="ignore_index"):
        ls.cross_entropy(torch.zeros(3, 3), t, ignore_index=255)
    with pytest.raises(ValueError, match="prior"):
        ls.cross_entropy(torch.zeros(3, 3), t.smooth(0.1), alpha=0.1, prior=torch.tensor([0.2, 0.3, 0.5]))


def test_others_convention_beyond_a_mixture_is_refused_for_soft_targets():
    t = SoftTargets.from_index(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha"):
        ls.smooth_labels(torch.zeros(2, 2), t, 0.9, convention="others")
    smoothed = ls.smooth_labels(torch.zeros(2, 3), t, 0.3, convention="others")
    torch.testing.assert_close(
        smoothed.to_dense(3, torch.float64),
        ls.smooth_labels(
            torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1]), 0.3, convention="others"
        ),
    )


def test_half_logits_compute_in_float32_and_soft_targets_pickle():
    _, y, logits, perm, lam = _case(9)
    t = SoftTargets.from_index(y).mix(perm, lam.float()).smooth(0.1)
    half = ls.cross_entropy(logits.half(), t)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ls.cross_entropy(logits.half().float(), t))
    again = pickle.loads(pickle.dumps(t))
    torch.testing.assert_close(again.to_dense(5), t.to_dense(5))
    assert repr(again) == repr(t)


def test_per_position_lam_mix_equals_dense():
    g, y, _, perm, _ = _case(10, spatial=(3,))
    lam = torch.rand(y.shape, generator=g, dtype=torch.float64)
    t = SoftTargets.from_index(y, num_classes=5).mix(perm, lam).smooth(0.2)
    q0 = ref.one_hot(y, 5)
    expected = ref.smooth((1 - lam.unsqueeze(-1)) * q0 + lam.unsqueeze(-1) * q0[perm], 0.2)
    torch.testing.assert_close(t.to_dense(dtype=torch.float64, dim=-1), expected)

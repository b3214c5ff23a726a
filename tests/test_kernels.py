"""Both index kernels, fused and chunked, against PyTorch and a dense float64 formula.

Oracles: ``F.cross_entropy(label_smoothing=)`` (index targets) and the dense
target ``q`` written out in float64 (mixtures, priors). Never our own code.
Every test runs once per backend; ``chunk_size`` and ``inplace_backward``
options apply to the chunked kernel only, so the fused run drops
``chunk_size`` (tests of ``inplace_backward`` run the chunked kernel either way).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth
from _devices import DEVICES
from labelsmooth import kernels

DTYPE_TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),  # the logits themselves are rounded to 8 bits
}


@pytest.fixture(autouse=True, params=["inductor", "chunked"])
def kernel(request):
    with kernels.use_backend(request.param):
        yield request.param


def rows_loss(logits, targets, target_weights=None, *, smoothing=0.0, prior=None, weight=None,
              ignore_index=-100, **options):
    if kernels.backend() == "inductor" and not options.get("inplace_backward"):
        options.pop("chunk_size", None)
    return kernels.index_cross_entropy_rows(
        logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
        ignore_index=ignore_index, **options,
    )


def dense_rows_float64(logits, targets, target_weights, *, smoothing, prior, weight, ignore_index):
    """The oracle's rows for ``(M, C)`` logits: the dense mixture target ``q``, smoothed towards
    ``prior`` (or uniform), then ``-sum_c w_c q_c log p_c``."""
    index = targets.reshape(logits.shape[0], -1)
    lam = None if target_weights is None else target_weights.reshape(index.shape)
    q = ref.mixture(index, lam, logits.shape[1], ignore_index=ignore_index)
    return ref.cross_entropy_rows(logits, ref.smooth(q, smoothing, prior=prior), weight=weight)


def peak_allocation(prof):
    """Largest live CPU allocation during a profile: self allocations in end order.

    An op's self usage nets its own allocations and the frees of its children's
    buffers (an autograd function's forward frees its scratch); counted when it
    ends, those frees come after the children's allocations, never before them.
    """
    live, peak = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.end):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def make_case(rows, num_classes, dtype, *, seed=0, ignore_every=4, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, num_classes, generator=generator, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, num_classes, (rows,), generator=generator)
    if ignore_every:
        targets[::ignore_every] = -100
    return logits, targets


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("rows", "chunk_size"), [(13, 4), (13, None), (1, 3), (64, 7)], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matches_pytorch_loss_and_gradient(dtype, smoothing, weighted, rows, chunk_size, device):
    logits, targets = make_case(rows, 11, dtype)
    weight = torch.rand(11, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    weight = weight if weighted else None
    grad_rows = torch.randn(rows, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours_in = logits.to(device, copy=True).requires_grad_()
    ours = rows_loss(ours_in, targets.to(device), smoothing=smoothing,
                     weight=None if weight is None else weight.to(device), chunk_size=chunk_size)
    (ours * grad_rows.to(device, ours.dtype)).sum().backward()
    theirs_in = logits.double().requires_grad_()
    theirs = F.cross_entropy(theirs_in, targets, weight=weight, label_smoothing=smoothing, reduction="none")
    (theirs * grad_rows).sum().backward()
    rtol, atol = DTYPE_TOL[dtype]
    assert ours.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    assert ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours.cpu().double(), theirs, rtol=rtol, atol=atol)
    torch.testing.assert_close(ours_in.grad.cpu().double(), theirs_in.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("with_prior", [False, True], ids=["uniform", "prior"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_mixture_matches_dense_float64(with_prior, weighted):
    generator = torch.Generator().manual_seed(3)
    rows, num_classes = 10, 6
    logits = torch.randn(rows, num_classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, num_classes, (rows, 3), generator=generator)
    targets[0, 1] = -100
    targets[4, 0] = targets[4, 2]  # a duplicated class inside one row
    lam = torch.rand(rows, 3, generator=generator, dtype=torch.float64)
    prior = torch.softmax(torch.randn(num_classes, generator=generator, dtype=torch.float64), 0)
    weight = torch.rand(num_classes, generator=generator, dtype=torch.float64) + 0.2
    options = {"smoothing": 0.3, "prior": prior if with_prior else None,
               "weight": weight if weighted else None, "ignore_index": -100}
    ours_in = logits.clone().requires_grad_()
    ours = rows_loss(ours_in, targets, lam, chunk_size=3, **options)
    theirs_in = logits.clone().requires_grad_()
    theirs = dense_rows_float64(theirs_in, targets, lam, **options)
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad)


def test_gradcheck_float64_logits_and_mixture_weights():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (7, 2), generator=generator)
    targets[2, 0] = -100
    lam = torch.rand(7, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(5, generator=generator, dtype=torch.float64) + 0.5

    def loss(x, w):
        return rows_loss(x, targets, w, smoothing=0.2, weight=weight, chunk_size=3)

    assert torch.autograd.gradcheck(loss, (logits, lam))


def test_empty_batch_gives_empty_loss_and_gradient():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = rows_loss(logits, torch.zeros(0, dtype=torch.long), smoothing=0.1)
    assert loss.shape == (0,)
    loss.sum().backward()
    assert logits.grad is not None and logits.grad.shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_huge_logits_stay_finite_and_exact(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dtype=dtype, requires_grad=True)
    loss = rows_loss(logits, torch.tensor([0, 0]), smoothing=0.1)
    loss.sum().backward()
    theirs_in = logits.detach().double().requires_grad_()
    theirs = F.cross_entropy(theirs_in, torch.tensor([0, 0]), label_smoothing=0.1, reduction="none")
    theirs.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss.double(), theirs, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(logits.grad.double(), theirs_in.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inplace_backward_writes_the_gradient_over_the_logits(dtype):
    logits, targets = make_case(9, 7, dtype)
    expected_in = logits.clone().requires_grad_()
    rows_loss(expected_in, targets, smoothing=0.1, chunk_size=4).sum().backward()
    leaf = logits.clone().requires_grad_()
    activations = leaf * 1  # the logits the loss may overwrite
    rows_loss(activations, targets, smoothing=0.1, chunk_size=4, inplace_backward=True).sum().backward()
    torch.testing.assert_close(leaf.grad, expected_in.grad)
    # The hazard, documented: the activations now hold the gradient.
    torch.testing.assert_close(activations.detach(), expected_in.grad)
    assert activations.data_ptr() != leaf.data_ptr()


def test_inplace_backward_off_leaves_logits_untouched():
    logits, targets = make_case(9, 7, torch.float32)
    before = logits.clone()
    logits.requires_grad_()
    rows_loss(logits, targets, smoothing=0.1).sum().backward()
    torch.testing.assert_close(logits.detach(), before, rtol=0, atol=0)


def test_inplace_backward_second_backward_is_refused():
    logits, targets = make_case(5, 4, torch.float64)
    activations = logits.requires_grad_() * 1
    loss = rows_loss(activations, targets, smoothing=0.1, inplace_backward=True).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_cross_entropy_inplace_backward_option():
    logits, targets = make_case(6, 5, torch.float32, ignore_every=0)
    logits = logits.reshape(2, 3, 5)
    leaf = logits.clone().requires_grad_()
    labelsmooth.cross_entropy(leaf * 1, targets.reshape(2, 3), alpha=0.1, dim=-1,
                              inplace_backward=True).backward()
    theirs_in = logits.clone().requires_grad_()
    F.cross_entropy(theirs_in.reshape(6, 5), targets, label_smoothing=0.1).backward()
    torch.testing.assert_close(leaf.grad, theirs_in.grad)


def test_differentiable_class_weights_fall_back_to_autograd():
    logits, targets = make_case(6, 5, torch.float64, ignore_every=0)
    weight = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).add(0.5)
    ours_w = weight.clone().requires_grad_()
    rows_loss(logits, targets, smoothing=0.1, weight=ours_w).sum().backward()
    theirs_w = weight.clone().requires_grad_()
    dense_rows_float64(logits, targets, None, smoothing=0.1, prior=None, weight=theirs_w,
                       ignore_index=-100).sum().backward()
    torch.testing.assert_close(ours_w.grad, theirs_w.grad)


def test_no_full_size_buffer_besides_the_gradient():
    """Peak allocation over fwd+bwd at (64, 50000) float32 stays near one (M, C) buffer."""
    from torch.profiler import ProfilerActivity, profile

    rows, num_classes = 64, 50_000
    logits, targets = make_case(rows, num_classes, torch.float32, ignore_every=0)
    logits.requires_grad_()
    full = rows * num_classes * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        rows_loss(logits, targets, smoothing=0.1, chunk_size=4).mean().backward()
    peak = peak_allocation(prof)
    # One gradient plus a 4-row scratch chunk and O(M) vectors; PyTorch's
    # eager path would hold the log-softmax and more besides.
    assert full <= peak < full + 4 * num_classes * 4 + (1 << 16)
    del logits.grad


@pytest.mark.parametrize("needs_grad", ["no_grad", "constant_logits"])
def test_forward_without_a_gradient_allocates_no_full_size_buffer(needs_grad):
    """Without a gradient to precompute, the forward keeps a scratch chunk and O(M) numbers."""
    from torch.profiler import ProfilerActivity, profile

    rows, num_classes = 64, 50_000
    logits, targets = make_case(rows, num_classes, torch.float32, ignore_every=0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if needs_grad == "no_grad":
            with torch.no_grad():
                rows_loss(logits.requires_grad_(), targets, smoothing=0.1, chunk_size=4)
        else:
            rows_loss(logits, targets, smoothing=0.1, chunk_size=4)
    assert peak_allocation(prof) < 4 * num_classes * 4 + (1 << 16)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_non_unit_incoming_gradient_and_a_second_backward(reduction, dtype):
    """The forward's gradient is scaled by the incoming one; a retained graph recomputes it."""
    logits, targets = make_case(9, 7, dtype)
    generator = torch.Generator().manual_seed(4)
    incoming = torch.rand(9 if reduction == "none" else (), generator=generator, dtype=torch.float64) + 0.5
    theirs_in = logits.clone().double().requires_grad_()
    F.cross_entropy(theirs_in, targets, label_smoothing=0.1, reduction=reduction).backward(incoming)
    leaf = logits.clone().requires_grad_()
    loss = labelsmooth.cross_entropy(leaf, targets, alpha=0.1, reduction=reduction)
    rtol, atol = DTYPE_TOL[dtype]
    for _ in range(2):
        leaf.grad = None
        loss.backward(incoming.to(loss.dtype), retain_graph=True)
        torch.testing.assert_close(leaf.grad.double(), theirs_in.grad, rtol=rtol, atol=atol)


def test_pytorch_label_smoothing_needs_more_than_the_gradient():
    """The measurement above can fail: PyTorch's own path is caught by it."""
    from torch.profiler import ProfilerActivity, profile

    logits, targets = make_case(64, 50_000, torch.float32, ignore_every=0)
    logits.requires_grad_()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        F.cross_entropy(logits, targets, label_smoothing=0.1).backward()
    peak = peak_allocation(prof)
    assert peak >= 2 * logits.numel() * 4


def test_inplace_backward_on_a_leaf_makes_its_grad_an_alias():
    logits, targets = make_case(6, 5, torch.float64)
    reference_in = logits.clone().requires_grad_()
    F.cross_entropy(reference_in, targets, label_smoothing=0.1).backward()
    leaf = logits.clone().requires_grad_()
    labelsmooth.cross_entropy(leaf, targets, alpha=0.1, inplace_backward=True).backward()
    torch.testing.assert_close(leaf.grad, reference_in.grad)
    assert leaf.grad.data_ptr() == leaf.data_ptr() and not leaf.grad.requires_grad


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("chunk_size", [1, 2, None], ids=lambda c: f"chunk{c}")
def test_class_dim_layout_matches_pytorch_segmentation(dtype, weighted, chunk_size):
    """(B, C, S) logits: chunked over B in their own layout, same as F.cross_entropy on (N, C, H, W)."""
    generator = torch.Generator().manual_seed(6)
    logits = (torch.randn(3, 7, 4, 5, generator=generator, dtype=torch.float64) * 3).to(dtype)
    targets = torch.randint(0, 7, (3, 4, 5), generator=generator)
    targets[0, 1] = -100
    weight = torch.rand(7, generator=generator, dtype=torch.float64) + 0.1 if weighted else None
    grad_rows = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    ours_in = logits.clone().requires_grad_()
    ours = rows_loss(ours_in.reshape(3, 7, 20), targets.reshape(-1), smoothing=0.1, weight=weight,
                     chunk_size=chunk_size).reshape(3, 4, 5)
    (ours * grad_rows.to(ours.dtype)).sum().backward()
    theirs_in = logits.double().requires_grad_()
    theirs = F.cross_entropy(theirs_in, targets, weight=weight, label_smoothing=0.1, reduction="none")
    (theirs * grad_rows).sum().backward()
    rtol, atol = DTYPE_TOL[dtype]
    torch.testing.assert_close(ours.double(), theirs, rtol=rtol, atol=atol)
    torch.testing.assert_close(ours_in.grad.double(), theirs_in.grad, rtol=rtol, atol=atol)


def test_class_dim_layout_mixture_with_prior_matches_dense_float64():
    generator = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 5, (12, 2), generator=generator)
    targets[3, 1] = -100
    lam = torch.rand(12, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    prior = torch.softmax(torch.randn(5, generator=generator, dtype=torch.float64), 0)
    weight = torch.rand(5, generator=generator, dtype=torch.float64) + 0.2
    options = {"smoothing": 0.3, "prior": prior, "weight": weight, "ignore_index": -100}
    ours_in = logits.clone().requires_grad_()
    ours = rows_loss(ours_in, targets, lam, chunk_size=1, **options)
    theirs_in = logits.clone().requires_grad_()
    theirs = dense_rows_float64(theirs_in.movedim(1, -1).reshape(12, 5), targets, lam, **options)
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad)
    fresh = ours_in.detach().requires_grad_()
    def loss(x, w):
        return rows_loss(x, targets, w, chunk_size=1, **options)

    assert torch.autograd.gradcheck(loss, (fresh, lam))


def test_segmentation_inplace_backward_through_cross_entropy():
    generator = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 4, 3, 3, generator=generator)
    targets = torch.randint(0, 4, (2, 3, 3), generator=generator)
    leaf = logits.clone().requires_grad_()
    labelsmooth.cross_entropy(leaf, targets, alpha=0.1, inplace_backward=True).backward()
    theirs_in = logits.clone().requires_grad_()
    F.cross_entropy(theirs_in, targets, label_smoothing=0.1).backward()
    torch.testing.assert_close(leaf.grad, theirs_in.grad)
    assert leaf.grad.data_ptr() == leaf.data_ptr()


@pytest.mark.parametrize(
    ("options", "convention"),
    [("plain", "uniform"), ("plain", "others"), ("weight", "uniform"), ("weight", "others"),
     ("prior", "uniform")],  # a prior needs the uniform convention
)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("shape", "dim"), [((6, 5), 1), ((2, 5, 3, 2), 1), ((2, 3, 5), -1)], ids=str)
def test_cross_entropy_in_every_layout_matches_the_dense_float64_target(convention, reduction, options,
                                                                        shape, dim):
    """cross_entropy through the kernels, against ``-sum_c w_c q_c log p_c`` of the target ``q``
    written out from each convention's definition; the mean divides by ``sum_i w_{y_i}``
    (PyTorch's rule for index targets)."""
    generator = torch.Generator().manual_seed(10)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64)
    index_shape = tuple(s for i, s in enumerate(shape) if i != dim % len(shape))
    targets = torch.randint(0, 5, index_shape, generator=generator)
    targets.view(-1)[::4] = -100
    extra = {}
    if options == "weight":
        extra["weight"] = torch.rand(5, generator=generator, dtype=torch.float64) + 0.1
    if options == "prior":
        extra["prior"] = torch.softmax(torch.randn(5, generator=generator, dtype=torch.float64), 0)
    one_hot = ref.one_hot(targets, 5, dim=dim)
    if convention == "others":  # 1 - alpha on the true class, alpha / (C - 1) on each other one
        q = one_hot * 0.8 + (one_hot.sum(dim, keepdim=True) - one_hot) * 0.2 / 4
    else:
        q = ref.smooth(one_hot, 0.2, prior=extra.get("prior"), dim=dim)
    weight = extra.get("weight")
    valid = (targets != -100).double()
    count = valid.sum() if weight is None else (weight[targets.clamp(min=0)] * valid).sum()
    leaf = logits.clone().requires_grad_()
    loss = labelsmooth.cross_entropy(leaf, targets, alpha=0.2, reduction=reduction, convention=convention,
                                     dim=dim, **extra)
    theirs_in = logits.clone().requires_grad_()
    rows = ref.cross_entropy_rows(theirs_in, q, weight=weight, dim=dim)
    theirs = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / count}[reduction]
    torch.testing.assert_close(loss, theirs)
    loss.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(leaf.grad, theirs_in.grad)

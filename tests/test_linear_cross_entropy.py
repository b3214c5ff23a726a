"""The fused output layer against ``F.linear`` then ``F.cross_entropy(label_smoothing=)`` in float64.

Function equals module and pickling: ``test_loss_contract``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from _devices import LINEAR_PATHS
from labelsmooth import linear_cross_entropy

DTYPE_TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (5e-2, 5e-2),  # inputs and products rounded to 8 bits
}


def make_case(rows, hidden_size, vocab, dtype, *, seed=0, ignore_every=3, bias=True):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, hidden_size, generator=generator, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, hidden_size, generator=generator, dtype=torch.float64) / 2).to(dtype)
    b = torch.randn(vocab, generator=generator, dtype=torch.float64).to(dtype) if bias else None
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    if ignore_every:
        targets[1::ignore_every] = -100
    return hidden, weight, b, targets


def run_both(hidden, weight, bias, targets, *, alpha, reduction, chunk_size=None, grad_seed=7, device="cpu"):
    """Loss and gradients of ours (in the input dtype, on ``device``) and of PyTorch in float64."""
    inputs = [t for t in (hidden, weight, bias) if t is not None]
    ours_in = [t.to(device, copy=True).requires_grad_() for t in inputs]
    theirs_in = [t.double().requires_grad_() for t in inputs]
    ours_bias = ours_in[2] if bias is not None else None
    theirs_bias = theirs_in[2] if bias is not None else None
    ours = linear_cross_entropy(ours_in[0], ours_in[1], targets.to(device), linear_bias=ours_bias,
                                alpha=alpha, reduction=reduction, chunk_size=chunk_size)
    theirs = F.cross_entropy(F.linear(theirs_in[0], theirs_in[1], theirs_bias), targets,
                             label_smoothing=alpha, reduction=reduction)
    grad_out = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(grad_seed),
                           dtype=torch.float64)
    (ours * grad_out.to(device, ours.dtype)).sum().backward()
    (theirs * grad_out).sum().backward()
    return ours, theirs, ours_in, theirs_in


@pytest.fixture
def linear_path(request):
    """The device of a ``LINEAR_PATHS`` parameter, with its backend set for the test."""
    device, backend = request.param
    with ls.kernels.use_backend(backend):
        yield device


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0], ids=lambda a: f"alpha{a}")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("rows", "chunk_size"), [(13, 4), (13, None), (1, 2)], ids=str)
@pytest.mark.parametrize("linear_path", LINEAR_PATHS, indirect=True)
def test_matches_linear_then_cross_entropy(dtype, reduction, alpha, with_bias, rows, chunk_size, linear_path):
    device = linear_path
    hidden, weight, bias, targets = make_case(rows, 8, 11, dtype, bias=with_bias)
    ours, theirs, ours_in, theirs_in = run_both(
        hidden, weight, bias, targets, alpha=alpha, reduction=reduction, chunk_size=chunk_size, device=device
    )
    rtol, atol = DTYPE_TOL[dtype]
    assert ours.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    torch.testing.assert_close(ours.cpu().double(), theirs, rtol=rtol, atol=atol)
    for mine, reference in zip(ours_in, theirs_in, strict=True):
        assert mine.grad.dtype == dtype
        torch.testing.assert_close(mine.grad.cpu().double(), reference.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(reduction):
    hidden, weight, bias, targets = make_case(6, 4, 5, torch.float64)
    inputs = tuple(t.requires_grad_() for t in (hidden, weight, bias))

    def loss(h, w, b):
        return linear_cross_entropy(h, w, targets, linear_bias=b, alpha=0.2, reduction=reduction,
                                    chunk_size=4)

    assert torch.autograd.gradcheck(loss, inputs)


def test_batched_hidden_states_equal_flattened():
    hidden, weight, bias, targets = make_case(12, 6, 9, torch.float64)
    batched = linear_cross_entropy(hidden.reshape(3, 4, 6), weight, targets.reshape(3, 4), linear_bias=bias,
                                   alpha=0.1, reduction="none")
    theirs = F.cross_entropy(F.linear(hidden, weight, bias), targets, label_smoothing=0.1, reduction="none")
    assert batched.shape == (3, 4)
    torch.testing.assert_close(batched.reshape(-1), theirs)


def test_empty_batch_and_all_ignored_give_zero_mean():
    hidden, weight, _, _ = make_case(0, 4, 5, torch.float32)
    hidden.requires_grad_()
    loss = linear_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long), alpha=0.1)
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad.shape == (0, 4)
    hidden, weight, _, targets = make_case(3, 4, 5, torch.float32)
    weight.requires_grad_()
    loss = linear_cross_entropy(hidden, weight, torch.full_like(targets, -100), alpha=0.1)
    loss.backward()
    assert loss.item() == 0.0 and bool((weight.grad == 0).all())


def test_frozen_projection_gets_no_gradient():
    hidden, weight, _, targets = make_case(5, 4, 6, torch.float64)
    hidden.requires_grad_()
    linear_cross_entropy(hidden, weight, targets, alpha=0.1).backward()
    expected = hidden.detach().clone().requires_grad_()
    F.cross_entropy(F.linear(expected, weight), targets, label_smoothing=0.1).backward()
    assert weight.grad is None
    torch.testing.assert_close(hidden.grad, expected.grad)


def test_huge_logits_stay_finite():
    hidden = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    weight = torch.tensor([[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]], requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.tensor([1, 1]), alpha=0.1)
    loss.backward()
    expected = F.cross_entropy(F.linear(hidden.detach().double(), weight.detach().double()),
                               torch.tensor([1, 1]), label_smoothing=0.1)
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-2)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"linear_weight": torch.zeros(6, 5)}, ValueError,
         r"linear_weight: expected a matrix of shape \(V, 4\)"),
        ({"linear_weight": torch.zeros(6, 4, dtype=torch.float64)}, TypeError,
         "linear_weight: expected the input's dtype"),
        ({"linear_bias": torch.zeros(5)}, ValueError, r"linear_bias: expected a vector of shape \(6,\)"),
        ({"target": torch.zeros(3, dtype=torch.long)}, ValueError, r"target: expected class indices"),
        ({"target": torch.zeros(7)}, TypeError, "target: expected an integer tensor"),
        ({"target": torch.full((7,), 6)}, ValueError, r"target: expected class indices in \[0, 6\)"),
        ({"weight": torch.ones(5)}, ValueError, r"weight: expected a vector of shape \(6,\)"),
        ({"weight": torch.zeros(6, 4)}, ValueError, r"weight: expected class weights of shape \(V,\); "
         r"pass the \(V, H\) projection as linear_weight"),
        ({"chunk_size": 0}, ValueError, "chunk_size: expected a positive int"),
        ({"alpha": 1.5}, ValueError, "alpha: expected a real number"),
        ({"alpha": 0.1, "label_smoothing": 0.2}, ValueError,
         "alpha and label_smoothing: expected one of them"),
        ({"reduction": "avg"}, ValueError, "reduction: expected one of"),
        ({"z_loss": -1.0}, ValueError, "z_loss: expected a finite real number >= 0"),
        ({"softcap": 0.0}, ValueError, "softcap: expected None or a finite real number > 0"),
        ({"num_items_in_batch": 0}, ValueError, "num_items_in_batch: expected a positive int"),
        ({"num_items_in_batch": 3, "reduction": "none"}, ValueError,
         "num_items_in_batch: expected None with reduction='none'"),
    ],
    ids=["weight-shape", "weight-dtype", "bias-shape", "targets-shape", "targets-dtype",
         "targets-range", "class-weight-shape", "projection-as-weight", "chunk-size", "alpha",
         "alias-conflict", "reduction", "z-loss", "softcap", "num-items", "num-items-none"],
)
def test_bad_inputs_raise_naming_the_argument(change, error, match):
    hidden, weight, _, targets = make_case(7, 4, 6, torch.float32)
    arguments = {"input": hidden, "linear_weight": weight, "target": targets} | change
    with pytest.raises(error, match=match):
        linear_cross_entropy(**arguments)


def test_old_bias_keyword_is_gone():
    hidden, weight, bias, targets = make_case(7, 4, 6, torch.float32)
    with pytest.raises(TypeError, match="bias"):
        linear_cross_entropy(hidden, weight, targets, bias=bias)


def test_never_holds_the_logits():
    """Peak allocation over fwd+bwd stays well below one (N, V) logits tensor."""
    from torch.profiler import ProfilerActivity, profile

    rows, hidden_size, vocab = 256, 32, 20_000
    hidden, weight, bias, targets = make_case(rows, hidden_size, vocab, torch.float32)
    for tensor in (hidden, weight, bias):
        tensor.requires_grad_()
    chunk_rows = 16
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        linear_cross_entropy(hidden, weight, targets, linear_bias=bias, alpha=0.1,
                             chunk_size=chunk_rows).backward()
    live, peak = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    logits_bytes = rows * vocab * 4
    gradients = (weight.numel() + hidden.numel() + bias.numel()) * 4
    # The gradients, two chunks of logits and small change; never the (N, V) logits.
    assert peak < gradients + 3 * chunk_rows * vocab * 4 + (1 << 20) < logits_bytes


def test_second_backward_through_a_retained_graph_recomputes():
    hidden, weight, bias, targets = make_case(9, 4, 6, torch.float64)
    inputs = [t.requires_grad_() for t in (hidden, weight, bias)]
    loss = linear_cross_entropy(*inputs[:2], targets, linear_bias=inputs[2], alpha=0.1, chunk_size=4)
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for t in inputs]
    loss.backward()
    for tensor, once in zip(inputs, first, strict=True):
        torch.testing.assert_close(tensor.grad, 2 * once)


@pytest.mark.parametrize(("convention", "with_prior"), [("others", False), ("uniform", True)],
                         ids=["others", "prior"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_convention_and_prior_match_the_dense_float64_target(convention, with_prior, reduction):
    """The chunked path against ``-sum_c w_c q_c log p_c`` of the target written out from each
    convention's definition (``_reference``); the mean divides by ``sum_i w_{y_i}``."""
    import _reference as ref

    hidden, weight, bias, targets = make_case(13, 8, 11, torch.float64)
    generator = torch.Generator().manual_seed(3)
    class_weight = torch.rand(11, generator=generator, dtype=torch.float64) + 0.2
    prior = torch.softmax(torch.randn(11, generator=generator, dtype=torch.float64), 0)
    prior = prior if with_prior else None
    one_hot = ref.one_hot(targets, 11)
    if convention == "others":  # 1 - alpha on the true class, alpha / (V - 1) on each other one
        q = one_hot * 0.7 + (one_hot.sum(-1, keepdim=True) - one_hot) * 0.3 / 10
    else:
        q = ref.smooth(one_hot, 0.3, prior=prior)
    ours_in = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ours = linear_cross_entropy(ours_in[0], ours_in[1], targets, linear_bias=ours_in[2], weight=class_weight,
                                alpha=0.3, convention=convention, prior=prior, reduction=reduction,
                                chunk_size=4)
    theirs_in = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    theirs = ref.cross_entropy_rows(F.linear(*theirs_in), q, weight=class_weight)
    if reduction == "mean":
        valid = targets != -100
        theirs = theirs.sum() / (class_weight[targets.clamp(min=0)] * valid).sum()
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    for mine, reference in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(mine.grad, reference.grad)


def test_prior_with_the_others_convention_is_refused():
    hidden, weight, _, targets = make_case(7, 4, 6, torch.float32)
    with pytest.raises(ValueError, match="convention: expected 'uniform' when a prior is given"):
        linear_cross_entropy(hidden, weight, targets, alpha=0.1, prior=torch.full((6,), 1 / 6),
                             convention="others")


@pytest.mark.parametrize("options", [{"convention": "others"}, {"prior": "softmax"}], ids=["others", "prior"])
def test_module_passes_convention_and_prior_and_pickles(options):
    import pickle

    from labelsmooth import LinearCrossEntropyLoss

    hidden, weight, bias, targets = make_case(9, 4, 6, torch.float64)
    if "prior" in options:
        options = {"prior": torch.softmax(torch.arange(6, dtype=torch.float64), 0)}
    module = LinearCrossEntropyLoss(alpha=0.2, **options)
    expected = linear_cross_entropy(hidden, weight, targets, linear_bias=bias, alpha=0.2, **options)
    torch.testing.assert_close(module(hidden, weight, targets, bias), expected, rtol=0, atol=0)
    torch.testing.assert_close(pickle.loads(pickle.dumps(module))(hidden, weight, targets, bias), expected,
                               rtol=0, atol=0)
    assert ("convention='others'" in repr(module)) == ("convention" in options)

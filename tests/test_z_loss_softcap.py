"""z-loss, logit softcapping and num_items_in_batch, on both kernels, against the dense float64 formula.

Oracles: the capped logits ``k tanh(x / k)``, the dense smoothed target ``q`` and
``-sum_c w_c q_c log softmax(z)_c`` (``_reference``), and ``zeta lse^2``
per position not ignored, reduced by PyTorch's rule for the cross-entropy and
Liger-Kernel's for the z-loss (mean over the positions not ignored, without
class weights); and ``F.cross_entropy`` on the capped logits. Every test runs
once per backend.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth as ls
from labelsmooth import kernels

IGNORE = -100
TOL = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 3e-2, "atol": 3e-2},
}


@pytest.fixture(autouse=True, params=["inductor", "chunked"])
def kernel(request):
    with kernels.use_backend(request.param):
        yield request.param


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def capped(x, softcap):
    return x if softcap is None else softcap * torch.tanh(x / softcap)


def reference(logits, q, *, weight=None, softcap=None, z_loss=0.0, reduction="mean", dim=1,
              num_items=None, index=None):
    """``(loss, z-loss part)`` in float64 from the dense target ``q`` (logits' shape).

    The mean divides the cross-entropy by ``sum_i sum_c w_c q_ic`` (the dense
    rule) or, given the ``index`` targets, by ``sum_i w_{y_i}`` over those not
    ignored (PyTorch's index rule)."""
    z = capped(logits.double(), softcap)
    q = q.double()
    shape = [1] * z.dim()
    shape[dim] = -1
    w = torch.ones(z.shape[dim], dtype=torch.float64) if weight is None else weight.double()
    wq = q * w.reshape(shape)
    ce = ref.cross_entropy_rows(z, q, weight=weight, dim=dim)
    has_mass = (q.sum(dim) > 0).double()
    zl = z_loss * has_mass * torch.logsumexp(z, dim) ** 2
    if reduction == "none":
        return ce + zl, zl
    if num_items is not None:
        return (ce + zl).sum() / num_items, zl.sum() / num_items
    if reduction == "sum":
        return (ce + zl).sum(), zl.sum()
    if index is None:
        ce_divisor = wq.sum()
    else:
        valid = index != IGNORE
        ce_divisor = (w[torch.where(valid, index, 0)] * valid).sum()
    return ce.sum() / ce_divisor + zl.sum() / has_mass.sum(), zl.sum() / has_mass.sum()


def smoothed_index_target(targets, num_classes, alpha, dim=1):
    """The dense target of index ``targets`` smoothed by ``alpha`` (zeros where ignored)."""
    return ref.smooth(ref.one_hot(targets, num_classes, ignore_index=IGNORE, dim=dim), alpha, dim=dim)


def make_index_case(shape=(13,), num_classes=11, dtype=torch.float64, dim=1, seed=0, scale=4.0):
    g = _generator(seed)
    index_shape = shape
    logits_shape = (*shape[:dim], num_classes, *shape[dim:]) if dim != -1 else (*shape, num_classes)
    logits = (torch.randn(logits_shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, num_classes, index_shape, generator=g)
    targets.view(-1)[::4] = IGNORE
    weight = torch.rand(num_classes, generator=g, dtype=torch.float64) + 0.2
    return logits, targets, weight


def _loss_and_grad(fn, logits, grad_seed=9):
    """``(loss, z part, gradients, g1, g2)``: the gradients of ``loss . g1`` (the z part only
    logged: the forward's own gradient) and of ``loss . g1 + z . g2`` (a recomputed one), for
    incoming gradients not 1."""
    g = _generator(grad_seed)
    grads = []
    for with_z in (False, True):
        leaf = logits.detach().clone().requires_grad_()
        loss, z = fn(leaf)
        if not grads:
            g1 = (torch.rand(loss.shape, generator=g, dtype=torch.float64) + 0.5).to(loss.dtype)
            g2 = (torch.rand(loss.shape, generator=g, dtype=torch.float64) * 2).to(loss.dtype)
        ((loss * g1).sum() + ((z * g2).sum() if with_z else 0)).backward()
        grads.append(leaf.grad)
    return loss, z, grads, g1.double(), g2.double()


def _assert_matches_reference(ours, theirs_fn, logits, tol):
    loss, z, grads, g1, g2 = ours
    for grad, with_z in zip(grads, (False, True), strict=True):
        theirs_in = logits.detach().double().requires_grad_()
        ref_loss, ref_z = theirs_fn(theirs_in)
        ((ref_loss * g1).sum() + ((ref_z * g2).sum() if with_z else 0)).backward()
        torch.testing.assert_close(grad.double(), theirs_in.grad, **tol)
    torch.testing.assert_close(loss.double(), ref_loss, **tol)
    torch.testing.assert_close(z.double(), ref_z, **tol)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.0, 0.1], ids=lambda a: f"alpha{a}")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("softcap", "z_loss"), [(None, 0.05), (5.0, 0.0), (5.0, 0.05)],
                         ids=["zloss", "softcap", "both"])
def test_index_targets_match_dense_float64(dtype, reduction, alpha, weighted, softcap, z_loss):
    logits, targets, weight = make_index_case(dtype=dtype)
    weight = weight if weighted else None
    options = {"weight": weight, "softcap": softcap, "z_loss": z_loss, "reduction": reduction}
    ours = _loss_and_grad(lambda x: ls.cross_entropy(x, targets, alpha=alpha, return_z_loss=True,
                                                     **options), logits)
    q = smoothed_index_target(targets, 11, alpha)
    _assert_matches_reference(ours, lambda x: reference(x, q, index=targets, **options), logits, TOL[dtype])
    assert ours[0].dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    assert all(grad.dtype == dtype for grad in ours[2])


@pytest.mark.parametrize(("shape", "dim"), [((2, 3, 4), 1), ((2, 5), -1)], ids=["segmentation", "btv"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_class_dim_layouts_match_dense_float64(shape, dim, reduction):
    logits, targets, weight = make_index_case(shape=shape, num_classes=6, dim=dim)
    options = {"weight": weight, "softcap": 3.0, "z_loss": 0.02, "reduction": reduction, "dim": dim}
    ours = _loss_and_grad(lambda x: ls.cross_entropy(x, targets, alpha=0.2, return_z_loss=True,
                                                     **options), logits)
    q = smoothed_index_target(targets, 6, 0.2, dim=dim % logits.dim())
    _assert_matches_reference(ours, lambda x: reference(x, q, index=targets, **options), logits,
                              TOL[torch.float64])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_softcap_equals_pytorch_on_capped_logits(reduction):
    logits, targets, weight = make_index_case(scale=20.0)
    leaf = logits.clone().requires_grad_()
    ours = ls.cross_entropy(leaf, targets, label_smoothing=0.1, weight=weight, softcap=7.5,
                            reduction=reduction)
    ours.sum().backward()
    ref_in = logits.clone().requires_grad_()
    theirs = F.cross_entropy(7.5 * torch.tanh(ref_in / 7.5), targets, weight=weight, label_smoothing=0.1,
                             reduction=reduction)
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(leaf.grad, ref_in.grad)


def test_z_loss_mean_is_over_positions_not_ignored_without_class_weights():
    """Liger-Kernel's rule: with weights the cross-entropy divides by sum w_y, the z-loss by the count."""
    logits, targets, weight = make_index_case()
    loss, z = ls.cross_entropy(logits, targets, weight=weight, z_loss=0.1, return_z_loss=True)
    valid = targets != IGNORE
    lse = torch.logsumexp(logits, 1)
    torch.testing.assert_close(z, 0.1 * lse[valid].square().sum() / valid.sum())
    torch.testing.assert_close(loss - z, F.cross_entropy(logits, targets, weight=weight))


def test_z_loss_zero_gives_a_zero_part_and_the_plain_loss():
    logits, targets, _ = make_index_case()
    loss, z = ls.cross_entropy(logits, targets, alpha=0.1, return_z_loss=True, reduction="none")
    assert z.shape == loss.shape and bool((z == 0).all())
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, label_smoothing=0.1, reduction="none"))


def test_all_positions_ignored_give_zero_loss_and_gradient():
    logits, _, weight = make_index_case()
    leaf = logits.clone().requires_grad_()
    loss, z = ls.cross_entropy(leaf, torch.full((13,), IGNORE), weight=weight, z_loss=0.1, softcap=3.0,
                               alpha=0.1, return_z_loss=True)
    (loss + z).backward()
    assert loss.item() == 0.0 and z.item() == 0.0 and bool((leaf.grad == 0).all())


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64_through_both_outputs(reduction):
    logits, targets, weight = make_index_case(shape=(6,), num_classes=5, scale=2.0)
    leaf = logits.clone().requires_grad_()

    def loss(x):
        total, z = ls.cross_entropy(x, targets, alpha=0.2, weight=weight, softcap=2.5, z_loss=0.3,
                                    reduction=reduction, return_z_loss=True)
        return total, z

    assert torch.autograd.gradcheck(loss, (leaf,))


@pytest.mark.parametrize("option", ["chunk_size", "inplace_backward"])
def test_chunked_options_match_dense_float64(option):
    from labelsmooth.kernels import index_cross_entropy_z_loss

    logits, targets, weight = make_index_case(shape=(10,), num_classes=7)
    extra = {"chunk_size": 3} if option == "chunk_size" else {"inplace_backward": True}

    def ours(x):
        return index_cross_entropy_z_loss(
            x * 1, targets, z_loss=0.05, smoothing=0.1, prior=None, weight=weight, ignore_index=IGNORE,
            softcap=4.0, **extra,
        )

    q = smoothed_index_target(targets, 7, 0.1)
    _assert_matches_reference(
        _loss_and_grad(ours, logits),
        lambda x: reference(x, q, weight=weight, softcap=4.0, z_loss=0.05, reduction="none"), logits,
        TOL[torch.float64],
    )


def test_differentiable_class_weights_with_z_loss_and_softcap():
    logits, targets, weight = make_index_case()
    ours_w = weight.clone().requires_grad_()
    ours = ls.cross_entropy(logits, targets, alpha=0.1, weight=ours_w, z_loss=0.05, softcap=5.0)
    ours.backward()
    theirs_w = weight.clone().requires_grad_()
    q = smoothed_index_target(targets, 11, 0.1)
    theirs, _ = reference(logits, q, weight=theirs_w, softcap=5.0, z_loss=0.05, index=targets)
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_w.grad, theirs_w.grad)


def test_logits_are_left_untouched():
    logits, targets, weight = make_index_case(dtype=torch.float32)
    before = logits.clone()
    leaf = logits.requires_grad_()
    ls.cross_entropy(leaf, targets, alpha=0.1, weight=weight, z_loss=0.1, softcap=3.0).backward()
    torch.testing.assert_close(leaf.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_huge_logits_stay_finite_under_a_cap(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], dtype=dtype)
    targets = torch.tensor([0, 0])
    ours = _loss_and_grad(lambda x: ls.cross_entropy(x, targets, alpha=0.1, softcap=30.0, z_loss=1e-3,
                                                     reduction="none", return_z_loss=True), logits)
    assert all(bool(torch.isfinite(t).all()) for t in (*ours[:2], *ours[2]))
    q = smoothed_index_target(targets, 3, 0.1)
    _assert_matches_reference(
        ours, lambda x: reference(x, q, softcap=30.0, z_loss=1e-3, reduction="none"), logits,
        {"rtol": 2e-2, "atol": 2e-2},
    )


def test_soft_targets_match_dense_float64():
    """A MixUp mixture, smoothed, with ignored positions: the dense rule for the mean."""
    logits, targets, weight = make_index_case(shape=(8,), num_classes=6)
    perm = torch.arange(8).flip(0)
    soft = ls.SoftTargets.from_index(targets, num_classes=6, ignore_index=IGNORE).mix(perm, 0.25).smooth(0.2)
    options = {"weight": weight, "softcap": 4.0, "z_loss": 0.05}
    first, second = smoothed_index_target(targets, 6, 0.0), smoothed_index_target(targets[perm], 6, 0.0)
    mixed = 0.75 * first + 0.25 * second  # weights exact in float32, as SoftTargets stores them
    q = 0.8 * mixed + 0.2 * mixed.sum(1, keepdim=True) / 6
    for reduction in ("none", "mean", "sum"):
        ours = _loss_and_grad(lambda x, r=reduction: ls.cross_entropy(
            x, soft, reduction=r, return_z_loss=True, **options), logits)
        _assert_matches_reference(ours, lambda x, r=reduction: reference(x, q, reduction=r, **options),
                                  logits, TOL[torch.float64])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_dense_targets_match_dense_float64(reduction):
    logits, _, weight = make_index_case()
    dense = torch.softmax(torch.randn(logits.shape, generator=_generator(3), dtype=torch.float64), 1)
    dense[2] = 0.0  # a row without mass: an ignored position
    options = {"weight": weight, "softcap": 4.0, "z_loss": 0.05, "reduction": reduction}
    ours = _loss_and_grad(lambda x: ls.cross_entropy(x, dense, alpha=0.1, return_z_loss=True, **options),
                          logits)
    q = 0.9 * dense + 0.1 * dense.sum(1, keepdim=True) / 11
    _assert_matches_reference(ours, lambda x: reference(x, q, **options), logits, TOL[torch.float64])


def _linear_case(dtype=torch.float64, seed=1):
    g = _generator(seed)
    hidden = torch.randn(13, 8, generator=g, dtype=torch.float64).to(dtype)
    proj = (torch.randn(11, 8, generator=g, dtype=torch.float64)).to(dtype)
    bias = torch.randn(11, generator=g, dtype=torch.float64).to(dtype)
    targets = torch.randint(0, 11, (13,), generator=g)
    targets[1::3] = IGNORE
    weight = torch.rand(11, generator=g, dtype=torch.float64) + 0.2
    return hidden, proj, bias, targets, weight


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("softcap", "z_loss", "weighted"),
                         [(None, 0.0, True), (None, 0.05, False), (5.0, 0.05, True)],
                         ids=["class-weights", "zloss", "all"])
@pytest.mark.parametrize("chunk_size", [4, None], ids=["chunk4", "default-chunk"])
def test_linear_matches_dense_float64(dtype, reduction, softcap, z_loss, weighted, chunk_size):
    hidden, proj, bias, targets, weight = _linear_case(dtype)
    weight = weight if weighted else None
    options = {"softcap": softcap, "z_loss": z_loss, "reduction": reduction}
    q = smoothed_index_target(targets, 11, 0.1)
    tol = TOL[dtype] if dtype != torch.bfloat16 else {"rtol": 6e-2, "atol": 6e-2}
    g = _generator(4)
    g1 = torch.rand(() if reduction != "none" else (13,), generator=g, dtype=torch.float64) + 0.5
    g2 = torch.rand(g1.shape, generator=g, dtype=torch.float64)
    # The z part logged only (the forward's gradients), then given a gradient (recomputed).
    for with_z in (False, True):
        leaves = [t.detach().clone().requires_grad_() for t in (hidden, proj, bias)]
        loss, z = ls.linear_cross_entropy(*leaves[:2], targets, linear_bias=leaves[2], weight=weight,
                                          label_smoothing=0.1, chunk_size=chunk_size, return_z_loss=True,
                                          **options)
        ((loss * g1.to(loss.dtype)).sum() + ((z * g2.to(z.dtype)).sum() if with_z else 0)).backward()
        refs = [t.detach().double().clone().requires_grad_() for t in (hidden, proj, bias)]
        ref_loss, ref_z = reference(F.linear(*refs), q, weight=weight, index=targets, **options)
        ((ref_loss * g1).sum() + ((ref_z * g2).sum() if with_z else 0)).backward()
        torch.testing.assert_close(loss.double(), ref_loss, **tol)
        torch.testing.assert_close(z.double(), ref_z, **tol)
        for mine, theirs in zip(leaves, refs, strict=True):
            assert mine.grad.dtype == dtype
            torch.testing.assert_close(mine.grad.double(), theirs.grad, **tol)


def test_linear_class_weights_equal_pytorch():
    hidden, proj, bias, targets, weight = _linear_case()
    ours = ls.linear_cross_entropy(hidden, proj, targets, linear_bias=bias, weight=weight, alpha=0.1)
    theirs = F.cross_entropy(F.linear(hidden, proj, bias), targets, weight=weight, label_smoothing=0.1)
    torch.testing.assert_close(ours, theirs)


def test_linear_gradcheck_float64():
    hidden, proj, bias, targets, weight = _linear_case()
    inputs = tuple(t[:6].clone().requires_grad_() if t is hidden else t.clone().requires_grad_()
                   for t in (hidden, proj, bias))

    def loss(h, w, b):
        return ls.linear_cross_entropy(h, w, targets[:6], linear_bias=b, weight=weight, alpha=0.2,
                                       softcap=3.0, z_loss=0.1, chunk_size=4, return_z_loss=True)

    assert torch.autograd.gradcheck(loss, inputs)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["int", "tensor"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_num_items_in_batch_divides_the_summed_loss(as_tensor, reduction):
    logits, targets, weight = make_index_case()
    num_items = torch.tensor(40) if as_tensor else 40
    options = {"weight": weight, "z_loss": 0.05, "softcap": 4.0}
    ours = _loss_and_grad(lambda x: ls.cross_entropy(x, targets, alpha=0.1, reduction=reduction,
                                                     num_items_in_batch=num_items, return_z_loss=True,
                                                     **options), logits)
    q = smoothed_index_target(targets, 11, 0.1)
    _assert_matches_reference(ours, lambda x: reference(x, q, num_items=40, **options), logits,
                              TOL[torch.float64])


def test_num_items_in_batch_on_linear_and_soft_targets():
    hidden, proj, bias, targets, _ = _linear_case()
    ours = ls.linear_cross_entropy(hidden, proj, targets, linear_bias=bias, alpha=0.1,
                                   num_items_in_batch=torch.tensor(20.0))
    theirs = F.cross_entropy(F.linear(hidden, proj, bias), targets, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(ours, theirs / 20)
    logits, index, _ = make_index_case()
    soft = ls.SoftTargets.from_index(index, num_classes=11, ignore_index=IGNORE)
    torch.testing.assert_close(
        ls.cross_entropy(logits, soft, num_items_in_batch=7),
        F.cross_entropy(logits, index, reduction="sum") / 7,
    )


@pytest.mark.parametrize(
    ("value", "reduction", "error", "match"),
    [
        (0, "mean", ValueError, "num_items_in_batch: expected a positive int"),
        (3, "none", ValueError, "num_items_in_batch: expected None with reduction='none'"),
        (2.5, "mean", TypeError, "num_items_in_batch: expected an int"),
        (torch.tensor([3]), "mean", TypeError, "num_items_in_batch: expected an int or a 0-dim"),
        (torch.tensor(0.0), "mean", ValueError, "num_items_in_batch: expected a finite count > 0"),
        (torch.tensor(True), "mean", TypeError, "num_items_in_batch: expected an int or a 0-dim"),
    ],
    ids=["zero", "with-none", "float", "vector", "zero-tensor", "bool-tensor"],
)
def test_bad_num_items_in_batch(value, reduction, error, match):
    logits, targets, _ = make_index_case()
    with pytest.raises(error, match=match):
        ls.cross_entropy(logits, targets, reduction=reduction, num_items_in_batch=value)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"z_loss": -0.1}, ValueError, "z_loss: expected a finite real number >= 0"),
        ({"z_loss": "big"}, TypeError, "z_loss: expected a real number >= 0"),
        ({"softcap": -1.0}, ValueError, "softcap: expected None or a finite real number > 0"),
        ({"softcap": float("inf")}, ValueError, "softcap: expected None or a finite real number > 0"),
        ({"softcap": True}, TypeError, "softcap: expected None or a real number > 0"),
        ({"return_z_loss": 1}, TypeError, "return_z_loss: expected True or False"),
        ({"alpha": 0.1, "label_smoothing": 0.2}, ValueError,
         r"alpha and label_smoothing: expected one of them, or equal values .*got 'alpha=0.1, "
         r"label_smoothing=0.2'"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing: expected a real number in"),
    ],
    ids=["z-negative", "z-str", "cap-negative", "cap-inf", "cap-bool", "return-flag", "alias-conflict",
         "alias-range"],
)
def test_bad_options_raise_naming_the_argument(options, error, match):
    logits, targets, _ = make_index_case()
    with pytest.raises(error, match=match):
        ls.cross_entropy(logits, targets, **options)


@pytest.mark.parametrize("module", ["CrossEntropyLoss", "LinearCrossEntropyLoss"])
def test_modules_refuse_the_same_options_at_construction(module):
    cls = getattr(ls, module)
    with pytest.raises(ValueError, match="alpha and label_smoothing"):
        cls(alpha=0.1, label_smoothing=0.3)
    with pytest.raises(ValueError, match="softcap"):
        cls(softcap=0.0)
    with pytest.raises(ValueError, match="z_loss"):
        cls(z_loss=-1.0)


def test_label_smoothing_is_alpha():
    logits, targets, _ = make_index_case()
    torch.testing.assert_close(ls.cross_entropy(logits, targets, label_smoothing=0.3),
                               ls.cross_entropy(logits, targets, alpha=0.3))
    torch.testing.assert_close(ls.cross_entropy(logits, targets, label_smoothing=0.3, alpha=0.3),
                               F.cross_entropy(logits, targets, label_smoothing=0.3))
    assert ls.CrossEntropyLoss(label_smoothing=0.3).alpha == 0.3
    assert ls.LinearCrossEntropyLoss(label_smoothing=0.3).alpha == 0.3


def test_cross_entropy_module_equals_function_and_pickles():
    logits, targets, weight = make_index_case()
    module = ls.CrossEntropyLoss(label_smoothing=0.1, weight=weight, z_loss=0.05, softcap=4.0,
                                 return_z_loss=True)
    assert "z_loss=0.05, softcap=4.0, return_z_loss=True" in repr(module)
    expected = ls.cross_entropy(logits, targets, alpha=0.1, weight=weight, z_loss=0.05, softcap=4.0,
                                return_z_loss=True, num_items_in_batch=30)
    for candidate in (module, pickle.loads(pickle.dumps(module))):
        got = candidate(logits, targets, num_items_in_batch=30)
        torch.testing.assert_close(got, expected)


def test_linear_module_equals_function_and_pickles():
    hidden, proj, bias, targets, weight = _linear_case()
    module = ls.LinearCrossEntropyLoss(alpha=0.1, weight=weight, z_loss=0.05, softcap=4.0,
                                       return_z_loss=True, chunk_size=4)
    expected = ls.linear_cross_entropy(hidden, proj, targets, linear_bias=bias, weight=weight, alpha=0.1,
                                       z_loss=0.05, softcap=4.0, return_z_loss=True, chunk_size=4)
    for candidate in (module, pickle.loads(pickle.dumps(module))):
        torch.testing.assert_close(candidate(hidden, proj, targets, bias), expected)
    assert repr(pickle.loads(pickle.dumps(module))) == repr(module)

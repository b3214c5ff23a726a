"""The Triton kernels of ``linear_cross_entropy`` against the dense float64 formula for every
option: on CUDA where there is a GPU (marked ``cuda``), else in Triton's interpreter on CPU tensors.

Oracle: ``z = F.linear`` in float64, capped ``k tanh(z / k)``; the dense target ``q`` of each
convention (``_reference``) and ``-sum_c w_c q_c log softmax(z)_c``; ``zeta lse^2`` per row not
ignored; the mean divides the cross-entropy by ``sum_i w_{y_i}`` and the z-loss by the count of
rows not ignored (PyTorch's and Liger-Kernel's rules), ``num_items_in_batch`` divides both sums.

``TRITON_INTERPRET=1`` has to be set before Triton is first imported: ``tests/conftest.py`` sets
it on machines without CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth as ls

triton = pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not triton.knobs.runtime.interpret:
    pytest.skip("Triton's interpreter needs TRITON_INTERPRET=1 before triton is imported "
                "(tests/conftest.py sets it)", allow_module_level=True)
pytestmark = [pytest.mark.cuda] if DEVICE == "cuda" else []
from labelsmooth.kernels import triton_linear  # noqa: E402  (after the skip: it needs TRITON_INTERPRET)

IGNORE = -100
# Small on purpose: 37 rows span three 16-row blocks, 101 classes four 32-column tiles (two
# vocabulary splits), hidden 48 three 16-deep dot steps.
ROWS, HIDDEN, VOCAB = 37, 48, 101
TOL = {
    torch.float32: {"rtol": 2e-5, "atol": 2e-5},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},  # products of 8-bit mantissas
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}


@pytest.fixture(scope="module", autouse=True)
def triton_backend():
    with ls.kernels.use_backend("triton"):
        yield


def make_case(dtype, *, seed=0, bias=True):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(ROWS, HIDDEN, generator=generator, dtype=torch.float64).to(dtype)
    weight = (torch.randn(VOCAB, HIDDEN, generator=generator, dtype=torch.float64) / 3).to(dtype)
    b = torch.randn(VOCAB, generator=generator, dtype=torch.float64).to(dtype) if bias else None
    targets = torch.randint(0, VOCAB, (ROWS,), generator=generator)
    targets[::5] = IGNORE
    return [hidden, weight, b], targets


def first_tile(targets):
    """``targets`` moved into the first column tile (ignored ones kept), so the other tiles hold none."""
    return torch.where(targets == IGNORE, IGNORE, targets % triton_linear._TILES.cols)


def make_peaked_case(dtype):
    """Rows whose logits peak at their target, as a trained model's do (``z_y`` about 107, the
    others about ``N(0, 15^2)``), targets in the first column tile: the other tiles' softmax
    entries are far below any threshold."""
    (hidden, weight, b), targets = make_case(torch.float64)
    targets = first_tile(targets)
    hidden = hidden / 4 + 20 * weight[targets.clamp(min=0)]
    return [t.to(dtype) for t in (hidden, weight, b)], targets


def per_tile(mask):
    """``(row blocks, column tiles)``: whether ``mask`` ``(N, V)`` holds all over each of the
    backward's tiles (``triton_linear._TILES``)."""
    tiles = triton_linear._TILES
    blocks, columns = -(-ROWS // tiles.rows), -(-VOCAB // tiles.cols)
    padded = torch.ones(blocks * tiles.rows, columns * tiles.cols, dtype=torch.bool)
    padded[:ROWS, :VOCAB] = mask
    return padded.reshape(blocks, tiles.rows, columns, tiles.cols).all(3).all(1)


def without_targets(targets):
    """``(row blocks, column tiles)``: the tiles where no target (not ignored) of their rows falls."""
    return per_tile(ref.one_hot(targets, VOCAB, ignore_index=IGNORE) == 0)


def spread(tile_mask):
    """A ``(row blocks, column tiles)`` mask as ``(N, V)``."""
    tiles = triton_linear._TILES
    return tile_mask.repeat_interleave(tiles.rows, 0).repeat_interleave(tiles.cols, 1)[:ROWS, :VOCAB]


def dense_target(targets, alpha, convention, prior):
    one_hot = ref.one_hot(targets, VOCAB, ignore_index=IGNORE)
    if convention == "others":  # 1 - alpha on the true class, alpha / (V - 1) on every other one
        return one_hot * (1 - alpha) + (one_hot.sum(-1, keepdim=True) - one_hot) * alpha / (VOCAB - 1)
    return ref.smooth(one_hot, alpha, prior=prior)


def reference(inputs, targets, *, alpha=0.0, convention="uniform", prior=None, weight=None,
              softcap=None, z_loss=0.0, reduction="mean", num_items_in_batch=None, lse=None):
    """``(loss, z-loss part)`` in float64. A given ``lse`` ``(N,)`` is an independent variable in
    ``log softmax(z) = z - lse``: its gradient is then the row scale of the softmax term."""
    z = F.linear(*inputs)
    z = z if softcap is None else softcap * torch.tanh(z / softcap)
    q = dense_target(targets, alpha, convention, prior)
    if lse is None:
        rows, lse = ref.cross_entropy_rows(z, q, weight=weight), torch.logsumexp(z, -1)
    else:
        rows = -(q * (1.0 if weight is None else weight.double()) * (z - lse[:, None])).sum(-1)
    valid = (targets != IGNORE).double()
    z_rows = z_loss * valid * lse.square()
    if reduction == "none":
        return rows + z_rows, z_rows
    if num_items_in_batch is not None or reduction == "sum":
        divisor = 1.0 if num_items_in_batch is None else float(num_items_in_batch)
        return (rows + z_rows).sum() / divisor, z_rows.sum() / divisor
    w = torch.ones(VOCAB, dtype=torch.float64) if weight is None else weight.double()
    ce_divisor = (w[targets.clamp(min=0)] * valid).sum()
    return rows.sum() / ce_divisor + z_rows.sum() / valid.sum(), z_rows.sum() / valid.sum()


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _options(name):
    prior = torch.softmax(torch.randn(VOCAB, generator=_generator(1), dtype=torch.float64), 0)
    weight = torch.rand(VOCAB, generator=_generator(2), dtype=torch.float64) + 0.2
    return {
        "alpha0": {"alpha": 0.0},
        "uniform-mean": {"alpha": 0.1},
        "others-sum": {"alpha": 0.2, "convention": "others", "reduction": "sum"},
        "prior-none": {"alpha": 0.3, "prior": prior, "reduction": "none"},
        "weight-prior-mean": {"alpha": 0.1, "prior": prior, "weight": weight},
        "weight-others-none": {"alpha": 0.1, "convention": "others", "weight": weight, "reduction": "none"},
        "softcap-none": {"alpha": 0.1, "softcap": 2.0, "reduction": "none"},
        "z-loss-mean": {"alpha": 0.1, "z_loss": 1e-2},
        "z-loss-none": {"alpha": 0.1, "z_loss": 1e-2, "reduction": "none"},
        "num-items": {"alpha": 0.1, "num_items_in_batch": 50},
        "everything": {"alpha": 0.2, "prior": prior, "weight": weight, "softcap": 3.0, "z_loss": 1e-2,
                       "num_items_in_batch": torch.tensor(40)},
    }[name]


def run_ours(inputs, targets, options, *, needs=(True, True, True)):
    """Ours on ``DEVICE``: the leaves, the loss and the z-loss part."""
    leaves = [None if t is None else t.to(DEVICE, copy=True).requires_grad_(need)
              for t, need in zip(inputs, needs, strict=True)]
    moved = {k: v.to(DEVICE, torch.float32) if k in ("prior", "weight") else v for k, v in options.items()}
    loss, z_part = ls.linear_cross_entropy(leaves[0], leaves[1], targets.to(DEVICE), linear_bias=leaves[2],
                                           return_z_loss=True, **moved)
    return leaves, loss, z_part


def ran_triton(output):
    """Whether the Triton autograd function is in ``output``'s graph."""
    pending, seen = [output.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith("TritonLinearCrossEntropyFunction"):
            return True
        pending.extend(next_node for next_node, _ in node.next_functions)
    return False


def check(inputs, targets, options, dtype, *, needs=(True, True, True), softmax_mask=None):
    """Loss, z-loss part and the gradients of both (incoming gradients that are not 1) match.

    With ``softmax_mask`` ``(N, V)`` (no softcap) the expected gradients keep the softmax
    term of ``dz`` only where the mask holds, and the rest of ``dz`` everywhere."""
    leaves, loss, z_part = run_ours(inputs, targets, options, needs=needs)
    assert ran_triton(loss)  # the kernels ran, not the chunked path
    theirs_in = [None if t is None else t.double().requires_grad_(need)
                 for t, need in zip(inputs, needs, strict=True)]
    lse = None
    if softmax_mask is not None:
        lse = torch.logsumexp(F.linear(*[None if t is None else t.detach() for t in theirs_in]), -1)
        lse.requires_grad_()
    their_loss, their_z = reference(theirs_in, targets, lse=lse, **options)
    grad_loss = torch.rand(their_loss.shape, generator=_generator(3), dtype=torch.float64) + 0.5
    grad_z = torch.rand(their_z.shape, generator=_generator(4), dtype=torch.float64) - 0.5
    with_z = options.get("z_loss", 0.0) != 0.0
    ours_z = (z_part * grad_z.to(DEVICE, torch.float32)).sum() if with_z else 0.0
    ((loss * grad_loss.to(DEVICE, torch.float32)).sum() + ours_z).backward()
    ((their_loss * grad_loss).sum() + (their_z * grad_z).sum()).backward()
    expected = [None if t is None else t.grad for t in theirs_in]
    if lse is not None:
        expected = with_softmax_term(theirs_in, expected, softmax_mask * lse.grad[:, None])
    tol = TOL[dtype]
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.cpu().double(), their_loss, **tol)
    torch.testing.assert_close(z_part.cpu().double(), their_z, **tol)
    for mine, theirs, grad in zip(leaves, theirs_in, expected, strict=True):
        if theirs is None or not theirs.requires_grad:
            assert mine is None or mine.grad is None
            continue
        assert mine.grad.dtype == dtype
        torch.testing.assert_close(mine.grad.cpu().double(), grad, **tol)


def with_softmax_term(inputs, grads, row_scale):
    """``grads`` of ``(h, W, b)`` plus those of the logits' gradient ``row_scale * softmax(z)``."""
    hidden, weight, bias = (None if t is None else t.detach() for t in inputs)
    dz = row_scale * torch.softmax(F.linear(hidden, weight, bias), -1)
    added = (dz @ weight, dz.T @ hidden, dz.sum(0))
    return [None if g is None else g + extra for g, extra in zip(grads, added, strict=True)]


def test_backend_reports_triton():
    assert ls.kernels.backend(DEVICE) == "triton"


@pytest.mark.parametrize("name", ["alpha0", "uniform-mean", "others-sum", "prior-none", "weight-prior-mean",
                                  "weight-others-none", "softcap-none", "z-loss-mean", "z-loss-none",
                                  "num-items", "everything"])
def test_every_option_matches_dense_float64(name):
    inputs, targets = make_case(torch.float32)
    check(inputs, targets, _options(name), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["uniform-mean", "everything"])
def test_16_bit_inputs_accumulate_in_float32(dtype, name):
    inputs, targets = make_case(dtype)
    check(inputs, targets, _options(name), dtype)


def test_without_bias_and_a_frozen_projection():
    inputs, targets = make_case(torch.float32, bias=False)
    check(inputs, targets, {"alpha": 0.1, "reduction": "sum"}, torch.float32, needs=(True, False, False))


def test_all_rows_ignored_give_zero_loss_and_gradients():
    inputs, targets = make_case(torch.float32)
    leaves, loss, _ = run_ours(inputs, torch.full_like(targets, IGNORE), {"alpha": 0.1})
    loss.backward()
    assert loss.item() == 0.0
    assert all(bool((leaf.grad == 0).all()) for leaf in leaves)


def test_huge_logits_stay_finite():
    hidden = torch.tensor([[100.0, -100.0]] * 16 + [[-100.0, 100.0]] * 16)
    weight = torch.tensor([[100.0, 0.0], [0.0, 100.0], [-100.0, 0.0]] * 11)
    targets = torch.arange(32) % 33
    leaves, loss, _ = run_ours([hidden, weight, None], targets, {"alpha": 0.1})
    loss.backward()
    expected = F.cross_entropy(F.linear(hidden.double(), weight.double()), targets, label_smoothing=0.1)
    assert torch.isfinite(leaves[0].grad).all() and torch.isfinite(leaves[1].grad).all()
    torch.testing.assert_close(loss.cpu().double(), expected, rtol=1e-6, atol=1e-2)


PEAKED = [(torch.float32, "weight-prior-mean"), (torch.float32, "z-loss-none"),
          (torch.bfloat16, "uniform-mean"), (torch.bfloat16, "weight-others-none")]


@pytest.mark.parametrize(("dtype", "name"), PEAKED, ids=[f"{str(d)[6:]}-{n}" for d, n in PEAKED])
def test_peaked_logits_skip_most_tiles_and_match_dense_float64(dtype, name):
    # A skipped tile drops less than SKIP_MASS of a row's softmax mass (2^-24 float32, 2^-8
    # bfloat16), inside the dtype's tolerance, so the usual tolerances hold.
    inputs, targets = make_peaked_case(dtype)
    if triton_linear._TILES.cols < VOCAB:  # the case is one tile on a GPU: nothing to skip there
        probs = torch.softmax(F.linear(*[t.double() for t in inputs]), -1)
        negligible = (probs < triton_linear.SKIP_MASS[dtype] / VOCAB) | (targets == IGNORE)[:, None]
        assert (per_tile(negligible) & without_targets(targets)).double().mean() > 0.5
    check(inputs, targets, _options(name), dtype)


@pytest.mark.parametrize("name", ["alpha0", "uniform-mean", "others-sum", "weight-prior-mean",
                                  "weight-others-none", "z-loss-none"])
def test_skipped_tiles_drop_exactly_their_softmax_term(name, monkeypatch):
    # An infinite threshold skips every tile without a target of its rows: there the gradient
    # is the smoothing term alone, which the closed form outside the tiles must give exactly.
    monkeypatch.setitem(triton_linear.SKIP_MASS, torch.float32, math.inf)
    inputs, targets = make_case(torch.float32)
    targets = first_tile(targets)
    skipped = spread(without_targets(targets))
    if skipped.any():
        check(inputs, targets, _options(name), torch.float32, softmax_mask=(~skipped).double())
    else:
        pytest.skip("one tile holds every row and class: nothing to skip")

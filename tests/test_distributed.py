"""labelsmooth.distributed: vocabulary-parallel loss and DDP normalization, on gloo with 2 and 4 processes.

Each world size spawns its processes once (a module-scoped fixture); the
workers save their losses and gradients and the tests compare them, case by
case, with PyTorch's ``F.cross_entropy`` on the full logits in one process.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import labelsmooth as ls
from gloo_helpers import cached_spawner, reference_loss_and_grad
from labelsmooth.distributed import global_num_items, vocab_parallel_cross_entropy

V_LOCAL = {2: 6, 4: 5}  # classes per rank; C = world size * V_LOCAL

class Case(NamedTuple):
    shape: tuple[int, ...]  # without the class dim
    alpha: float
    convention: str
    reduction: str
    dtype: torch.dtype = torch.float32
    ignore: str = "some"  # which targets are ignore_index: "some", "all" or "none"
    num_items: float | None = None
    weight: bool = False  # random (C,) class weights
    prior: bool = False  # a random (C,) smoothing distribution instead of uniform
    z_loss: float = 0.0
    softcap: float | None = None


CASES = {
    "NV-uniform-mean": Case((7,), 0.1, "uniform", "mean"),
    "BTV-others-mean": Case((2, 5), 0.2, "others", "mean"),
    "BTV-uniform-sum": Case((3, 4), 0.3, "uniform", "sum"),
    "NV-none-grad-output": Case((6,), 0.1, "uniform", "none"),
    "BTV-num-items": Case((2, 3), 0.1, "uniform", "mean", num_items=3.5),
    "NV-all-ignored": Case((4,), 0.1, "uniform", "mean", ignore="all"),
    "NV-no-smoothing": Case((5,), 0.0, "uniform", "mean", ignore="none"),
    "BTV-bfloat16": Case((2, 3), 0.1, "others", "mean", torch.bfloat16),
    "NV-weight-mean": Case((9,), 0.2, "uniform", "mean", weight=True),
    "BTV-weight-others-none": Case((2, 4), 0.1, "others", "none", weight=True),
    "NV-weight-no-smoothing-sum": Case((6,), 0.0, "uniform", "sum", weight=True),
    "NV-prior-mean": Case((8,), 0.3, "uniform", "mean", prior=True),
    "BTV-weight-prior-none": Case((3, 3), 0.2, "uniform", "none", weight=True, prior=True),
    "NV-weight-prior-num-items": Case((5,), 0.1, "uniform", "mean", num_items=2.5, weight=True, prior=True),
    "NV-weight-zloss-softcap-mean": Case((9,), 0.1, "uniform", "mean", weight=True, z_loss=0.05, softcap=2.0),
    "BTV-zloss-softcap-none": Case((2, 4), 0.2, "others", "none", z_loss=0.1, softcap=3.0),
    "BTV-prior-zloss-sum": Case((3, 3), 0.3, "uniform", "sum", prior=True, z_loss=0.02),
    "NV-softcap-num-items": Case((6,), 0.1, "uniform", "mean", num_items=4.0, softcap=1.5, z_loss=0.1),
    # Negative smoothing (allow_negative=True, set from the sign of alpha).
    "NV-negative-weight-mean": Case((9,), -0.3, "uniform", "mean", weight=True),
    "BTV-negative-others-none": Case((2, 4), -0.2, "others", "none"),
}


def _case_inputs(name: str, num_classes: int):
    """Full logits, targets, grad_output, weight and prior of a case, the same in every process."""
    case = CASES[name]
    gen = torch.Generator().manual_seed(sorted(CASES).index(name) + 100 * num_classes)
    logits = (torch.randn(*case.shape, num_classes, generator=gen) * 3).to(case.dtype)
    targets = torch.randint(0, num_classes, case.shape, generator=gen)
    if case.ignore == "all":
        targets.fill_(-100)
    elif case.ignore == "some":
        targets.view(-1)[::3] = -100
    grad_output = torch.rand(case.shape, generator=gen) + 0.5
    weight = torch.rand(num_classes, generator=gen) * 2 + 0.1 if case.weight else None
    prior = torch.softmax(torch.randn(num_classes, generator=gen), 0) if case.prior else None
    return logits, targets, grad_output, weight, prior


# ---------------------------------------------------------------- worker side


def _vocab_parallel_job(rank: int, world_size: int) -> dict:
    v_local = V_LOCAL[world_size]
    out = {}
    for name, case in CASES.items():
        logits, targets, grad_output, weight, prior = _case_inputs(name, v_local * world_size)
        shard = logits[..., rank * v_local : (rank + 1) * v_local].clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(
            shard, targets, alpha=case.alpha, convention=case.convention, reduction=case.reduction,
            num_items=case.num_items, weight=weight, prior=prior, z_loss=case.z_loss, softcap=case.softcap,
            allow_negative=case.alpha < 0,
        )
        loss.backward(grad_output if case.reduction == "none" else None)
        out[name] = (loss.detach(), shard.grad)
    try:  # weights for this rank's classes only: refused on every rank, before any collective
        local_weight = torch.ones(v_local)
        vocab_parallel_cross_entropy(torch.zeros(2, v_local), torch.tensor([0, 1]), weight=local_weight)
    except ValueError as error:
        out["local-weight-error"] = str(error)
    return out


def _ddp_inputs(rank: int):
    """Rank 0 has one padded position of 10, rank 1 has seven: means per rank differ from the global one."""
    gen = torch.Generator().manual_seed(7 + rank)
    x = torch.randn(2, 5, 8, generator=gen)
    y = torch.randint(0, 11, (2, 5), generator=gen)
    y.view(-1)[: 1 if rank == 0 else 7] = -100
    return x, y


def _ddp_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(8, 11)


def _ddp_job(rank: int, world_size: int) -> dict:
    model = torch.nn.parallel.DistributedDataParallel(_ddp_model())
    x, y = _ddp_inputs(rank)
    normalizer = global_num_items(y) / world_size
    loss = ls.cross_entropy(model(x), y, alpha=0.1, dim=-1, reduction="sum") / normalizer
    loss.backward()
    logged = loss.detach().clone()
    dist.all_reduce(logged)
    return {
        "ddp": {name: p.grad for name, p in model.module.named_parameters()},
        "ddp_logged_loss": logged / world_size,
        "ddp_num_items": global_num_items(y),
    }


def _job(rank: int, world_size: int) -> dict:
    result = _vocab_parallel_job(rank, world_size)
    if world_size == 2:
        result.update(_ddp_job(rank, world_size))
    return result


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """``spawned(world_size)``: the workers' results; each world size is spawned once per module."""
    return cached_spawner(_job, tmp_path_factory)


# ---------------------------------------------------------------- references


def _reference(name: str, num_classes: int):
    case = CASES[name]
    logits, targets, grad_output, weight, prior = _case_inputs(name, num_classes)
    return reference_loss_and_grad(
        logits, targets, grad_output, alpha=case.alpha, convention=case.convention, reduction=case.reduction,
        weight=weight, prior=prior, num_items=case.num_items, z_loss=case.z_loss, softcap=case.softcap,
    )


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("world_size", [2, 4], ids=["world2", "world4"])
def test_vocab_parallel_equals_full_logits(spawned, world_size, name):
    results = spawned(world_size)
    v_local = V_LOCAL[world_size]
    ref_loss, ref_grad = _reference(name, v_local * world_size)
    low_precision = CASES[name].dtype == torch.bfloat16
    tol = {"atol": 2e-2, "rtol": 2e-2} if low_precision else {"atol": 1e-5, "rtol": 1e-5}
    for rank, result in enumerate(results):
        loss, grad = result[name]
        torch.testing.assert_close(loss.double(), ref_loss, **tol)
        assert grad.dtype == CASES[name].dtype
        shard_ref = ref_grad[..., rank * v_local : (rank + 1) * v_local]
        torch.testing.assert_close(grad.double(), shard_ref, **tol)


@pytest.mark.parametrize("world_size", [2, 4], ids=["world2", "world4"])
def test_weight_of_the_local_shard_is_refused(spawned, world_size):
    num_classes = V_LOCAL[world_size] * world_size
    for result in spawned(world_size):
        assert f"weight: expected a vector of shape ({num_classes},)" in result["local-weight-error"]


def test_ddp_gradient_equals_combined_batch(spawned):
    world_size = 2
    results = spawned(world_size)
    batches = [_ddp_inputs(rank) for rank in range(world_size)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    model = _ddp_model()
    combined = F.cross_entropy(model(x).movedim(-1, 1), y, label_smoothing=0.1)
    combined.backward()
    for result in results:
        assert int(result["ddp_num_items"]) == int((y != -100).sum())
        torch.testing.assert_close(result["ddp_logged_loss"], combined.detach())
        for name, param in model.named_parameters():
            torch.testing.assert_close(result["ddp"][name], param.grad)


def test_ddp_local_means_differ_from_combined_batch():
    """What the normalizer fixes: averaging per-rank means weighs rank 1's three items like rank 0's nine."""
    model = _ddp_model()
    batches = [_ddp_inputs(rank) for rank in range(2)]
    with torch.no_grad():
        local_means = [F.cross_entropy(model(x).movedim(-1, 1), y, label_smoothing=0.1) for x, y in batches]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        combined = F.cross_entropy(model(x).movedim(-1, 1), y, label_smoothing=0.1)
    assert abs(float(sum(local_means) / 2 - combined)) > 1e-3


# ---------------------------------------------------------------- Megatron-LM's formula


def _megatron_loss(shard, lse, target_logit, alpha):
    """Megatron-LM's smoothed vocab-parallel loss on one rank: local vocab size, local mean of log-probs."""
    v_local = shard.shape[-1]
    smoothing = alpha * v_local / (v_local - 1)
    mean_log_probs = (shard - lse.unsqueeze(-1)).mean(-1)
    return (1.0 - smoothing) * (lse - target_logit) - smoothing * mean_log_probs


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_megatron_formula_is_right_only_on_one_rank(world_size):
    gen = torch.Generator().manual_seed(world_size)
    num_classes = 20
    logits = torch.randn(8, num_classes, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, num_classes, (8,), generator=gen)
    alpha = 0.1  # Megatron (like fairseq) puts alpha / (C - 1) on the other classes
    correct = F.cross_entropy(logits, targets, reduction="none",
                              label_smoothing=alpha * num_classes / (num_classes - 1))
    lse = torch.logsumexp(logits, -1)
    target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)
    v_local = num_classes // world_size
    for rank in range(world_size):
        shard = logits[:, rank * v_local : (rank + 1) * v_local]
        megatron = _megatron_loss(shard, lse, target_logit, alpha)
        if world_size == 1:
            torch.testing.assert_close(megatron, correct)
        else:
            assert float((megatron - correct).abs().max()) > 1e-2
        ours = vocab_parallel_cross_entropy(
            logits, targets, alpha=alpha, convention="others", reduction="none"
        )
        torch.testing.assert_close(ours, correct)


# ---------------------------------------------------------------- one process, no process group


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(5,), (2, 3), (1, 1)]),
    num_classes=st.integers(2, 9),
    alpha=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    convention=st.sampled_from(["uniform", "others"]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
)
def test_single_process_equals_pytorch(seed, shape, num_classes, alpha, convention, reduction, weighted):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, num_classes, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, num_classes, shape, generator=gen)
    targets.view(-1)[1::2] = -100
    weight = torch.rand(num_classes, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = vocab_parallel_cross_entropy(
        ours_in, targets, alpha=alpha, convention=convention, reduction=reduction, weight=weight
    )
    smoothing = alpha * num_classes / (num_classes - 1) if convention == "others" else alpha
    assume(smoothing <= 1.0)  # PyTorch refuses label_smoothing > 1
    ref = F.cross_entropy(ref_in.movedim(-1, 1), targets, weight=weight, reduction=reduction,
                          label_smoothing=smoothing)
    # Float64 to rounding: a float32 intermediate (a bool mask times a Python float) would show.
    tight = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(ours, ref, **tight)
    grad_out = torch.rand(ref.shape, generator=gen, dtype=torch.float64) + 0.5
    ours.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, **tight)


def test_gradcheck():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 5, -100, 2])
    weight = torch.rand(6, generator=gen, dtype=torch.float64) + 0.1
    prior = torch.softmax(torch.randn(6, generator=gen, dtype=torch.float64), 0)
    assert torch.autograd.gradcheck(
        lambda z: vocab_parallel_cross_entropy(z, targets, alpha=0.3, reduction="none"), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda z: vocab_parallel_cross_entropy(z, targets, alpha=0.3, weight=weight, prior=prior), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda z: vocab_parallel_cross_entropy(z, targets, alpha=0.3, weight=weight, z_loss=0.1, softcap=2.0,
                                               reduction="none"), (logits,)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_single_process_z_loss_and_softcap_equal_the_float64_formula(reduction):
    """Class weights, ignored positions, and the z-loss mean counting positions without weights."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 7, generator=gen, dtype=torch.float64) * 4
    targets = torch.tensor([0, 6, -100, 2, 3, -100])
    weight = torch.rand(7, generator=gen, dtype=torch.float64) + 0.5
    options = {"alpha": 0.2, "weight": weight, "reduction": reduction, "z_loss": 0.1, "softcap": 2.0}
    ref_loss, ref_grad = reference_loss_and_grad(
        logits, targets, torch.ones(6, dtype=torch.float64), alpha=0.2, convention="uniform",
        reduction=reduction, weight=weight, z_loss=0.1, softcap=2.0,
    )
    ours_in = logits.clone().requires_grad_()
    ours = vocab_parallel_cross_entropy(ours_in, targets, **options)
    ours.backward(torch.ones_like(ours))
    torch.testing.assert_close(ours, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_does_not_mutate_inputs():
    logits = torch.randn(3, 4)
    targets = torch.tensor([1, -100, 3])
    before = (logits.clone(), targets.clone())
    vocab_parallel_cross_entropy(logits.requires_grad_(), targets, alpha=0.2).backward()
    torch.testing.assert_close(logits.detach(), before[0])
    torch.testing.assert_close(targets, before[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"convention": "fairseq"}, ValueError, "convention"),
        ({"targets": torch.tensor([0, 7])}, ValueError, "targets"),
        ({"targets": torch.zeros(2, 4)}, ValueError, "targets"),
        ({"group": object()}, ValueError, "group"),
        ({"weight": torch.ones(3)}, ValueError, "weight"),
        ({"weight": -torch.ones(4)}, ValueError, "weight"),
        ({"prior": torch.ones(4)}, ValueError, "prior"),
        ({"prior": torch.full((4,), 0.25), "convention": "others"}, ValueError, "convention"),
        ({"z_loss": -0.1}, ValueError, "z_loss"),
        ({"softcap": 0.0}, ValueError, "softcap"),
        ({"softcap": "5"}, TypeError, "softcap"),
    ],
    ids=["alpha", "reduction", "convention", "out-of-range", "dense", "group-without-init",
         "weight-shape", "weight-negative", "prior-not-distribution", "prior-with-others",
         "z-loss-negative", "softcap-zero", "softcap-string"],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = {"targets": torch.tensor([0, 3]), **kwargs}
    with pytest.raises(error, match=match):
        vocab_parallel_cross_entropy(torch.zeros(2, 4), **args)


def test_global_num_items_without_process_group():
    assert int(global_num_items(torch.tensor([3, -100, 0]))) == 2
    assert int(global_num_items(torch.tensor([3, 255, 0]), ignore_index=255)) == 2

"""labelsmooth.tensor_parallel: DTensor logits sharded on the class dim, on gloo with 2 and 4 processes.

Three layouts are spawned once each (module-scoped): a 1-D mesh of 2, a 1-D
mesh of 4, and a 2x2 mesh of 4 whose two dims take turns at sharding the
classes and sharding or replicating the batch. The workers save each case's
loss, every rank's local gradient and the collectives counted by
``CommDebugMode``; the tests compare them with ``F.cross_entropy`` on the
full logits in float64 in one process. Class counts do not divide the
tensor-parallel size, so the shards are uneven (``torch.chunk``'s split).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import labelsmooth as ls
from gloo_helpers import cached_spawner, reference_loss_and_grad, reference_z_part
from labelsmooth.tensor_parallel import dtensor_cross_entropy, is_dtensor

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tensor_parallel_label_smoothing.py"


class Case(NamedTuple):
    shape: tuple[int, ...]  # global logits shape; the class count is filled in per layout
    dim: int  # the class dim
    alpha: float
    convention: str
    reduction: str
    weight: bool = False
    prior: bool = False
    dtype: torch.dtype = torch.float64
    z_loss: float = 0.0
    softcap: float | None = None
    num_items: int | None = None
    #: "dtensor_cross_entropy", or "cross_entropy": labelsmooth.cross_entropy's DTensor dispatch.
    via: str = "dtensor_cross_entropy"
    return_z_loss: bool = False


CASES = {
    "NC-uniform-mean": Case((8, 0), 1, 0.1, "uniform", "mean"),
    "NC-others-mean-weight": Case((8, 0), 1, 0.2, "others", "mean", weight=True),
    "NCS-uniform-sum-weight": Case((4, 0, 3), 1, 0.3, "uniform", "sum", weight=True),
    "BTC-others-none-weight": Case((5, 3, 0), -1, 0.1, "others", "none", weight=True),
    "BTC-uniform-sum-prior": Case((5, 3, 0), -1, 0.2, "uniform", "sum", weight=True, prior=True),
    "NC-no-smoothing-sum": Case((6, 0), 1, 0.0, "uniform", "sum"),
    "BTC-bfloat16-sum": Case((4, 3, 0), -1, 0.1, "uniform", "sum", dtype=torch.bfloat16),
    "NC-zloss-softcap-mean-weight": Case((8, 0), 1, 0.1, "uniform", "mean", weight=True, z_loss=0.05,
                                         softcap=2.5),
    "BTC-zloss-softcap-none-via-ce": Case((5, 3, 0), -1, 0.2, "others", "none", z_loss=0.1, softcap=4.0,
                                          via="cross_entropy"),
    "NCS-num-items-zloss-mean-via-ce": Case((4, 0, 3), 1, 0.1, "uniform", "mean", weight=True, z_loss=0.02,
                                            num_items=7, via="cross_entropy", return_z_loss=True),
    "NC-zloss-sum-return-via-ce": Case((6, 0), 1, 0.3, "uniform", "sum", z_loss=0.1, via="cross_entropy",
                                       return_z_loss=True),
    # Negative smoothing (allow_negative=True, set from the sign of alpha).
    "NC-negative-others-mean-weight": Case((8, 0), 1, -0.3, "others", "mean", weight=True),
    "BTC-negative-none-via-ce": Case((5, 3, 0), -1, -0.2, "uniform", "none", via="cross_entropy"),
}


class Layout(NamedTuple):
    world_size: int
    mesh_shape: tuple[int, ...]
    tp: int  # the mesh dim that shards the classes
    batch: str  # what the other mesh dim does: "shard" (tensor dim 0) or "replicate"
    num_classes: int


LAYOUTS = {
    "1d-of-2": Layout(2, (2,), 0, "", 7),
    "1d-of-4": Layout(4, (4,), 0, "", 10),
    "2x2-batch-shard": Layout(4, (2, 2), 1, "shard", 9),
    "2x2-batch-replicate": Layout(4, (2, 2), 1, "replicate", 9),
    "2x2-classes-on-dim0": Layout(4, (2, 2), 0, "shard", 9),
}


def _shape(case: Case, layout: Layout) -> tuple[int, ...]:
    class_dim = case.dim % len(case.shape)
    return tuple(layout.num_classes if i == class_dim else n for i, n in enumerate(case.shape))


def _inputs(name: str, layout: Layout):
    """Full logits, targets, grad_output, weight and prior of a case, the same in every process."""
    case = CASES[name]
    shape = _shape(case, layout)
    dim = case.dim % len(shape)
    gen = torch.Generator().manual_seed(sorted(CASES).index(name) + 100 * layout.num_classes)
    logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(case.dtype)
    target_shape = shape[:dim] + shape[dim + 1 :]
    targets = torch.randint(0, layout.num_classes, target_shape, generator=gen)
    targets.view(-1)[::4] = -100
    grad_output = torch.rand(target_shape, generator=gen, dtype=torch.float64) + 0.5
    weight = torch.rand(layout.num_classes, generator=gen, dtype=torch.float64) * 2 + 0.1
    prior = torch.softmax(torch.randn(layout.num_classes, generator=gen, dtype=torch.float64), 0)
    return logits, targets, grad_output, weight if case.weight else None, prior if case.prior else None


def _placements(case: Case, layout: Layout):
    """The logits' placements: Shard(class dim) on ``tp``; the other mesh dim shards dim 0 or replicates."""
    from torch.distributed.tensor import Replicate, Shard

    out = []
    for i in range(len(layout.mesh_shape)):
        if i == layout.tp:
            out.append(Shard(case.dim))  # as given: Shard(-1) for (B, T, C)
        else:
            out.append(Shard(0) if layout.batch == "shard" else Replicate())
    return out


# ---------------------------------------------------------------- worker side


def _run_case(name: str, layout: Layout, mesh) -> dict:
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor
    from torch.distributed.tensor.debug import CommDebugMode

    case = CASES[name]
    logits, targets, grad_output, weight, prior = _inputs(name, layout)
    x = distribute_tensor(logits, mesh, _placements(case, layout)).requires_grad_()
    if layout.batch == "shard":  # a plain tensor would be ambiguous here, as in loss_parallel
        tp_replicated = [Replicate() if i == layout.tp else p for i, p in enumerate(x.placements)]
        targets = distribute_tensor(targets, mesh, tp_replicated)
    if weight is not None:  # a replicated DTensor is accepted like a plain tensor
        weight = distribute_tensor(weight, mesh, [Replicate()] * mesh.ndim)
    kwargs = {"alpha": case.alpha, "convention": case.convention, "weight": weight, "prior": prior,
              "dim": case.dim, "z_loss": case.z_loss, "softcap": case.softcap,
              "num_items_in_batch": case.num_items, "return_z_loss": case.return_z_loss,
              "allow_negative": case.alpha < 0}
    loss_fn = ls.cross_entropy if case.via == "cross_entropy" else dtensor_cross_entropy
    try:
        with CommDebugMode() as forward_comms:
            loss = loss_fn(x, targets, reduction=case.reduction, **kwargs)
    except ValueError as error:  # the same on every rank, before any collective
        return {"error": str(error)}
    z_part = None
    if case.return_z_loss:
        loss, z_part = loss
        z_part = {"value": z_part.detach().full_tensor(), "placements": tuple(z_part.placements)}
    grad = distribute_tensor(grad_output.to(loss.dtype), mesh, loss.placements) if loss.dim() else None
    with CommDebugMode() as backward_comms:
        loss.backward(grad)
    return {
        "loss": loss.detach().full_tensor(),
        "loss_placements": tuple(loss.placements),
        "grad": x.grad.to_local(),
        "grad_is_dtensor": isinstance(x.grad, DTensor),
        "is_dtensor": (is_dtensor(x), is_dtensor(x.to_local())),
        "grad_placements": tuple(x.grad.placements),
        "logits_placements": tuple(x.placements),
        "coordinate": mesh.get_coordinate(),
        "forward_comms": forward_comms.get_total_counts(),
        "backward_comms": backward_comms.get_total_counts(),
        "z_part": z_part,
    }


FULL_TENSOR_CASE = "NCS-uniform-sum-weight"


def _backward_through_full_tensor(name: str, layout: Layout, mesh) -> torch.Tensor:
    """The local gradient when the loss is gathered (``full_tensor()``, as for logging) before backward."""
    from torch.distributed.tensor import Replicate, distribute_tensor

    case = CASES[name]
    logits, targets, _, weight, prior = _inputs(name, layout)
    x = distribute_tensor(logits, mesh, _placements(case, layout)).requires_grad_()
    tp_replicated = [Replicate() if i == layout.tp else p for i, p in enumerate(x.placements)]
    loss = dtensor_cross_entropy(x, distribute_tensor(targets, mesh, tp_replicated), alpha=case.alpha,
                                 convention=case.convention, weight=weight, prior=prior, dim=case.dim,
                                 reduction=case.reduction)
    loss.full_tensor().backward()
    return x.grad.to_local()


def _sharded(layout: Layout, mesh, logits: torch.Tensor, targets: torch.Tensor):
    """(N, C) ``logits`` sharded like the (N, C) cases, ``targets`` a DTensor of the matching placements."""
    from torch.distributed.tensor import Replicate, distribute_tensor

    placements = _placements(CASES["NC-uniform-mean"], layout)
    target_placements = [Replicate() if i == layout.tp else p for i, p in enumerate(placements)]
    return distribute_tensor(logits, mesh, placements), distribute_tensor(targets, mesh, target_placements)


def _errors(layout: Layout, mesh) -> dict:
    """Inputs refused with a message, on every rank alike (no rank left waiting in a collective)."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    zeros, labels = torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)
    attempts = {
        "plain-logits": lambda: dtensor_cross_entropy(zeros, labels),
        "replicated-logits": lambda: dtensor_cross_entropy(
            distribute_tensor(zeros, mesh, [Replicate()] * mesh.ndim), labels
        ),
        "dense-targets": lambda: dtensor_cross_entropy(_sharded(layout, mesh, zeros, labels)[0], zeros),
        "target-out-of-range": lambda: dtensor_cross_entropy(*_sharded(layout, mesh, zeros, labels + 8)),
        "weight-shape": lambda: dtensor_cross_entropy(
            *_sharded(layout, mesh, zeros, labels), weight=torch.ones(3)
        ),
        "negative-alpha": lambda: dtensor_cross_entropy(*_sharded(layout, mesh, zeros, labels), alpha=-0.1),
        "prior-with-others": lambda: dtensor_cross_entropy(
            *_sharded(layout, mesh, zeros, labels), prior=torch.full((8,), 0.125), convention="others"
        ),
        "targets-wrong-placements": lambda: dtensor_cross_entropy(
            _sharded(layout, mesh, zeros, labels)[0], distribute_tensor(labels, mesh, [Shard(0)] * mesh.ndim)
        ),
    }
    if layout.world_size == 4 and len(layout.mesh_shape) == 1:
        # torch.chunk splits 5 classes over 4 ranks as 2, 2, 1 and 0: the last rank would hold none.
        attempts["empty-shard"] = lambda: dtensor_cross_entropy(
            distribute_tensor(torch.zeros(2, 5), mesh, [Shard(1)]), torch.tensor([0, 4])
        )
    if layout.batch == "shard":
        attempts["plain-targets-batch-sharded"] = lambda: dtensor_cross_entropy(
            _sharded(layout, mesh, zeros, labels)[0], labels, reduction="sum"
        )
    out = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            out[name] = "no error"
        except (TypeError, ValueError) as error:
            out[name] = f"{type(error).__name__}: {error}"
    return out


def _job(rank: int, world_size: int) -> dict:
    """Every layout of this world size, each on its own DeviceMesh over the default group."""
    from torch.distributed.device_mesh import init_device_mesh

    out = {}
    for layout_name, layout in LAYOUTS.items():
        if layout.world_size == world_size:
            mesh = init_device_mesh("cpu", layout.mesh_shape)
            out[layout_name] = {
                "cases": {name: _run_case(name, layout, mesh) for name in CASES},
                "errors": _errors(layout, mesh),
                "through-full-tensor": _backward_through_full_tensor(FULL_TENSOR_CASE, layout, mesh),
                "coordinate": mesh.get_coordinate(),
            }
    return out


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """``spawned(world_size)``: the workers' results; each world size is spawned once per module."""
    return cached_spawner(_job, tmp_path_factory)


# ---------------------------------------------------------------- the tests


def _reference(name: str, layout: Layout):
    case = CASES[name]
    logits, targets, grad_output, weight, prior = _inputs(name, layout)
    return reference_loss_and_grad(
        logits, targets, grad_output, alpha=case.alpha, convention=case.convention, reduction=case.reduction,
        weight=weight, prior=prior, dim=case.dim, z_loss=case.z_loss, softcap=case.softcap,
        num_items=case.num_items,
    )


def _local_block(full: torch.Tensor, placements, mesh_shape, coordinate) -> torch.Tensor:
    """The block of ``full`` that the rank at ``coordinate`` holds: ``torch.chunk`` along each sharded dim."""
    from torch.distributed.tensor import Shard

    block = full
    for placement, size, index in zip(placements, mesh_shape, coordinate, strict=True):
        if isinstance(placement, Shard):
            block = block.chunk(size, dim=placement.dim)[index]
    return block


def _results(spawned, layout_name: str, name: str) -> list[dict]:
    layout = LAYOUTS[layout_name]
    return [rank_result[layout_name]["cases"][name] for rank_result in spawned(layout.world_size)]


CASE_IDS = list(CASES)
LAYOUT_IDS = list(LAYOUTS)


def _computed(layout_name: str, name: str) -> bool:
    """Every pair but a mean on a batch-sharded mesh (refused: a rank's count of items is local)
    without ``num_items_in_batch`` (the global count, which makes it a sum over that count)."""
    case = CASES[name]
    return not (case.reduction == "mean" and case.num_items is None and LAYOUTS[layout_name].batch == "shard")


@pytest.mark.parametrize(
    ("layout_name", "name"),
    [(layout, name) for layout in LAYOUT_IDS for name in CASE_IDS if _computed(layout, name)],
)
def test_loss_and_every_shard_gradient_equal_full_logits(spawned, layout_name, name):
    layout, case = LAYOUTS[layout_name], CASES[name]
    ref_loss, ref_grad = _reference(name, layout)
    low_precision = case.dtype == torch.bfloat16
    tol = {"atol": 3e-2, "rtol": 2e-2} if low_precision else {"atol": 1e-12, "rtol": 1e-12}
    for result in _results(spawned, layout_name, name):
        torch.testing.assert_close(result["loss"].double(), ref_loss, **tol)
        assert result["grad_is_dtensor"]
        assert result["is_dtensor"] == (True, False)
        assert result["grad_placements"] == result["logits_placements"]
        assert result["grad"].dtype == case.dtype
        placements, coordinate = result["logits_placements"], result["coordinate"]
        expected = _local_block(ref_grad, placements, layout.mesh_shape, coordinate)
        assert result["grad"].shape == expected.shape
        torch.testing.assert_close(result["grad"].double(), expected, **tol)


@pytest.mark.parametrize(
    ("layout_name", "name"),
    [(layout, name) for layout in LAYOUT_IDS for name in CASE_IDS if CASES[name].return_z_loss],
)
def test_returned_z_loss_part_equals_the_formula_with_the_loss_placements(spawned, layout_name, name):
    layout, case = LAYOUTS[layout_name], CASES[name]
    logits, targets, _, _, _ = _inputs(name, layout)
    capped = logits.double()
    if case.softcap is not None:
        capped = case.softcap * torch.tanh(capped / case.softcap)
    expected = reference_z_part(capped, targets, z_loss=case.z_loss, reduction=case.reduction,
                                dim=case.dim, num_items=case.num_items)
    assert expected.abs().item() > 0
    for result in _results(spawned, layout_name, name):
        torch.testing.assert_close(result["z_part"]["value"].double(), expected, atol=1e-12, rtol=1e-12)
        assert result["z_part"]["placements"] == result["loss_placements"]


@pytest.mark.parametrize("layout_name", LAYOUT_IDS)
def test_backward_through_the_gathered_loss_gives_the_same_gradient(spawned, layout_name):
    """``loss.full_tensor().backward()``: the Partial sum's gradient is not divided by the batch ranks."""
    layout = LAYOUTS[layout_name]
    _, ref_grad = _reference(FULL_TENSOR_CASE, layout)
    placements = _placements(CASES[FULL_TENSOR_CASE], layout)
    for rank_result in spawned(layout.world_size):
        result = rank_result[layout_name]
        expected = _local_block(ref_grad, placements, layout.mesh_shape, result["coordinate"])
        torch.testing.assert_close(result["through-full-tensor"].double(), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize(
    ("layout_name", "name"),
    [(layout, name) for layout in LAYOUT_IDS for name in CASE_IDS if _computed(layout, name)],
)
def test_two_all_reduces_per_call_none_in_backward(spawned, layout_name, name):
    for result in _results(spawned, layout_name, name):
        assert result["forward_comms"] == 2
        assert result["backward_comms"] == 0


def _expected_placements(layout: Layout, reduction: str):
    """loss_parallel's table: Replicate on the class mesh dim; batch Shard -> Partial for a scalar."""
    from torch.distributed.tensor import Partial, Replicate, Shard

    out = []
    for i in range(len(layout.mesh_shape)):
        if i == layout.tp or layout.batch == "replicate":
            out.append(Replicate())
        else:
            out.append(Shard(0) if reduction == "none" else Partial())
    return tuple(out)


@pytest.mark.parametrize(
    ("layout_name", "name"),
    [(layout, name) for layout in LAYOUT_IDS for name in CASE_IDS if _computed(layout, name)],
)
def test_loss_placements_follow_loss_parallel(spawned, layout_name, name):
    expected = _expected_placements(LAYOUTS[layout_name], CASES[name].reduction)
    for result in _results(spawned, layout_name, name):
        assert result["loss_placements"] == expected


@pytest.mark.parametrize("layout_name", [name for name in LAYOUT_IDS if LAYOUTS[name].batch == "shard"])
def test_mean_on_a_batch_sharded_mesh_is_refused(spawned, layout_name):
    for name in CASE_IDS:
        if not _computed(layout_name, name):
            for result in _results(spawned, layout_name, name):
                assert result["error"].startswith(
                    "reduction: expected 'sum' or 'none', or num_items_in_batch, where a mesh dim")


ERRORS = {
    "plain-logits": "TypeError: logits: expected a torch.distributed.tensor.DTensor",
    "replicated-logits": "ValueError: logits: expected a DTensor with Shard(1)",
    "dense-targets": "ValueError: targets: expected class indices",
    "target-out-of-range": "ValueError: targets: expected class indices in [0, 8)",
    "weight-shape": "ValueError: weight: expected a vector of shape (8,)",
    "prior-with-others": "ValueError: convention: expected 'uniform' when a prior is given",
    "targets-wrong-placements": "ValueError: targets: expected a DTensor on the logits' mesh with placements",
    "empty-shard": "ValueError: logits: expected at least one class on each of the 4 ranks",
    "plain-targets-batch-sharded": "ValueError: targets: expected a DTensor with placements",
    "negative-alpha": "ValueError: alpha: expected a real number in [0, 1], or one in [-1, 0) with "
                      "allow_negative=True (negative label smoothing: Wei et al.",
}


@pytest.mark.parametrize("layout_name", LAYOUT_IDS)
def test_bad_input_is_refused_on_every_rank(spawned, layout_name):
    layout = LAYOUTS[layout_name]
    for rank_result in spawned(layout.world_size):
        errors = rank_result[layout_name]["errors"]
        assert set(errors) <= set(ERRORS)
        for attempt, message in errors.items():
            assert message.startswith(ERRORS[attempt]), (attempt, message)


def test_is_dtensor_is_false_for_plain_tensors():
    assert not is_dtensor(torch.zeros(3))
    assert not is_dtensor("logits")


def test_example_trains_like_the_unsharded_model():
    """The example shards a model's output layer with ColwiseParallel on 2 gloo processes."""
    out = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "3"], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    losses = [line for line in out.splitlines() if line.startswith("step")]
    assert len(losses) == 3
    for line in losses:  # "step 0: tensor-parallel 3.90847707 single-process 3.90847731"
        words = line.split()
        assert abs(float(words[3]) - float(words[5])) < 1e-5, line
    assert float(out.splitlines()[-1].split()[-1]) < 1e-5  # max |parameter difference| after training

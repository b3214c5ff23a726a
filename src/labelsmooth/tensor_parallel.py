r"""Label smoothing for DTensor logits sharded on the class dim (tensor parallelism).

A tensor-parallel output layer (``ColwiseParallel(output_layouts=Shard(-1),
use_local_output=False)``, as torchtitan shards its ``output`` projection)
returns logits as a ``DTensor`` whose class dim is split over one dim of the
``DeviceMesh``. PyTorch's ``loss_parallel()`` computes ``F.cross_entropy`` of
such logits without gathering them, but documents ``label_smoothing`` as
"Currently not supported" (torch 2.13). :func:`dtensor_cross_entropy` is the
smoothed loss of the full logits, exact, with the global class count ``C`` in
the smoothing term: it runs the math of
:func:`labelsmooth.distributed.vocab_parallel_cross_entropy` on each rank's
local shard, with the process group of the mesh dim that shards the classes.
Two all-reduces per call, none in backward.

Placements follow ``torch/distributed/tensor/parallel/loss.py``: with
``tp`` the mesh dim holding ``Shard(dim)``,

* targets (and ``reduction="none"``'s loss) have ``Replicate()`` on ``tp``,
  and on every other mesh dim the logits' placement, with ``Shard(d)`` for
  ``d > dim`` moved to ``Shard(d - 1)`` (the class dim is gone);
* ``reduction="sum"`` gives ``Replicate()`` on ``tp`` and on replicating
  dims, and ``Partial()`` on batch-sharding dims (each rank holds the sum of
  its own rows);
* ``reduction="mean"`` gives a replicated scalar and needs every other mesh
  dim to replicate the batch: where a dim shards it, a rank's count of items
  is local, so divide ``"sum"`` by :func:`labelsmooth.distributed.global_num_items`
  over that dim's group yourself.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.distributed import ClassShard, ShardedRows, sharded_cross_entropy_rows
from labelsmooth.soft_targets import SoftTargets
from labelsmooth.targets import check_prior_convention, effective_alpha

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.placement_types import Placement

__all__ = ["dtensor_cross_entropy", "is_dtensor"]


def is_dtensor(value: object) -> TypeGuard[DTensor]:
    """Whether ``value`` is a ``torch.distributed.tensor.DTensor``, without importing that module.

    No DTensor can exist before ``torch.distributed.tensor`` is imported, so
    the check never triggers the import itself. ``torch.compile`` traces it
    (``fullgraph=True``).
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(value, module.DTensor)


def _class_mesh_dim(placements: tuple[Placement, ...], dim: int, ndim: int) -> int:
    """The one mesh dim whose placement is ``Shard(dim)``; the others must be Shard or Replicate."""
    from torch.distributed.tensor import Replicate, Shard

    expected = (f"a DTensor with Shard({dim}) (the class dim) on exactly one mesh dim and "
                "Shard of another dim or Replicate on the others")
    if any(not (type(p) is Shard or isinstance(p, Replicate)) for p in placements):
        raise v.fail("logits", expected, placements)
    class_dims = [i for i, p in enumerate(placements) if isinstance(p, Shard) and p.dim % ndim == dim]
    if len(class_dims) != 1:
        raise v.fail("logits", expected, placements)
    return class_dims[0]


def _target_placements(
    placements: tuple[Placement, ...], tp: int, dim: int, ndim: int
) -> tuple[Placement, ...]:
    """``loss_parallel``'s target placements: Replicate on ``tp``, Shard dims past ``dim`` shifted down."""
    from torch.distributed.tensor import Replicate, Shard

    out: list[Placement] = []
    for i, p in enumerate(placements):
        if i == tp:
            out.append(Replicate())
        elif isinstance(p, Shard):
            d = p.dim % ndim
            out.append(Shard(d - 1 if d > dim else d))
        else:
            out.append(p)
    return tuple(out)


def _local_targets(targets: object, mesh: DeviceMesh, placements: tuple[Placement, ...]) -> Tensor:
    """The local block of ``targets``: a DTensor of ``placements``, or a plain tensor where all replicate."""
    from torch.distributed.tensor import DTensor, Replicate

    if isinstance(targets, DTensor):
        if targets.device_mesh != mesh or tuple(targets.placements) != placements:
            raise v.fail("targets", f"a DTensor on the logits' mesh with placements {placements}",
                         f"{tuple(targets.placements)} on {targets.device_mesh}")
        return targets.to_local()
    targets = v.check_tensor(targets, "targets")
    if not all(isinstance(p, Replicate) for p in placements):
        # As in loss_parallel: a plain tensor could be the global targets or this rank's block.
        raise v.fail("targets", f"a DTensor with placements {placements} (DTensor.from_local) where a "
                     "mesh dim shards the batch", "a plain torch.Tensor")
    return targets


def _replicated_vector(value: object, arg: str) -> object:
    """A class vector given as a DTensor must be replicated; its local tensor is then the full vector."""
    from torch.distributed.tensor import DTensor, Replicate

    if not isinstance(value, DTensor):
        return value
    if not all(isinstance(p, Replicate) for p in value.placements):
        raise v.fail(arg, "a plain tensor or a replicated DTensor", tuple(value.placements))
    return value.to_local()


def _class_shard(num_classes: int, mesh: DeviceMesh, tp: int, local_size: int) -> ClassShard:
    """This rank's classes: ``torch.chunk``'s split of ``C`` over mesh dim ``tp``, as DTensor's Shard does."""
    world_size = mesh.size(tp)
    chunk = math.ceil(num_classes / world_size)
    # Decided from global sizes alone, so every rank refuses together (no rank left in a collective).
    if chunk * (world_size - 1) >= num_classes:
        raise v.fail("logits", f"at least one class on each of the {world_size} ranks of mesh dim {tp}",
                     f"{num_classes} classes")
    offset = mesh.get_local_rank(tp) * chunk
    expected = min(chunk, num_classes - offset)
    if local_size != expected:
        raise v.fail("logits", f"a local class block of {expected} (torch.chunk's split)", local_size)
    return ClassShard(offset, num_classes, mesh.get_group(tp), world_size)


class _AsDTensor(torch.autograd.Function):
    """Wrap a local tensor as a DTensor; backward hands the gradient's local block back as it is.

    ``DTensor.from_local`` would redistribute a ``Partial`` gradient of a
    ``Partial`` loss to ``Replicate``, an all-reduce in backward. The local
    block of the gradient of a summed loss is already the right one for this
    rank's rows, as in ``loss_parallel``'s backward.
    """

    @staticmethod
    def forward(
        ctx: Any, local: Tensor, mesh: DeviceMesh, placements: tuple[Placement, ...], shape: torch.Size,
    ) -> DTensor:
        from torch.distributed.tensor import DTensor

        ctx.mesh, ctx.placements = mesh, placements
        stride = torch.empty(shape, device="meta").stride()
        return DTensor.from_local(local, mesh, placements, run_check=False, shape=shape, stride=stride)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Tensor | None, ...]:
        from torch.distributed.tensor import DTensor

        if isinstance(grad, DTensor):
            if grad.dim() > 0 and tuple(grad.placements) != ctx.placements:
                grad = grad.redistribute(ctx.mesh, ctx.placements)  # a user's grad_output of other placements
            grad = grad.to_local()
        return grad, None, None, None


def _reduce(
    sharded: ShardedRows, reduction: str, num_items: Tensor | int | None, local_targets: Tensor,
    targets_shape: torch.Size, mesh: DeviceMesh, placements: tuple[Placement, ...],
) -> DTensor:
    """The loss as a DTensor; ``placements`` are the targets' (Replicate on the class mesh dim)."""
    from torch.distributed.tensor import Partial, Replicate, Shard

    wrap: Any = _AsDTensor.apply
    if reduction == "none":
        rows = sharded.reduce("none", None).reshape(local_targets.shape)
        return wrap(rows, mesh, placements, targets_shape)  # type: ignore[no-any-return]
    if reduction == "sum" or num_items is not None:
        # A rank's sum over its own rows; Partial adds them up over the batch-sharding dims.
        scalar: tuple[Placement, ...] = tuple(Partial() if isinstance(p, Shard) else p for p in placements)
        total = sharded.reduce("sum", None) if num_items is None else sharded.reduce("mean", num_items)
        return wrap(total, mesh, scalar, torch.Size())  # type: ignore[no-any-return]
    if any(isinstance(p, Shard) for p in placements):
        raise v.fail("reduction", "'sum' or 'none', or num_items_in_batch, where a mesh dim shards the "
                     "batch (a rank's count is local: see global_num_items)", reduction)
    return wrap(sharded.reduce("mean", None), mesh, (Replicate(),) * mesh.ndim, torch.Size())  # type: ignore[no-any-return]


def dtensor_cross_entropy(
    logits: DTensor,
    targets: Tensor | SoftTargets,
    *,
    alpha: float = 0.0,
    weight: Tensor | None = None,
    ignore_index: int = v.IGNORE_INDEX,
    reduction: str = "mean",
    prior: Tensor | None = None,
    convention: str = "uniform",
    dim: int = 1,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    num_items_in_batch: Tensor | int | None = None,
    allow_negative: bool = False,
) -> DTensor | tuple[DTensor, DTensor]:
    r"""Smoothed cross-entropy of DTensor logits sharded on the class dim, without gathering them.

    Equals :func:`labelsmooth.cross_entropy` of the full logits (index
    targets), loss and gradient: with ``u`` uniform (``1 / C``, ``C`` the
    *global* class count) or ``prior``, and ``w`` the class ``weight``,

    .. math::
        \ell = (1 - a)\, w_y (\operatorname{lse}(z) - z_y)
             + a \sum_{c<C} u_c w_c (\operatorname{lse}(z) - z_c),

    and ``"mean"`` divides the sum by ``sum_i w_{y_i}`` over the
    non-ignored positions (PyTorch's rule). The gradient reaches ``logits``
    as a DTensor with the logits' placements. Two all-reduces over the class
    mesh dim's group per call, none in backward.

    Args:
        logits: a DTensor with ``Shard(dim)`` on one mesh dim (1-D or 2-D
            mesh) and ``Shard`` of a batch dim or ``Replicate`` on the other.
            Global shape ``(N, C)``, ``(N, C, d1, ..., dK)`` or, with
            ``dim=-1``, ``(B, T, C)``.
        targets: global class indices of the logits' global shape without
            ``dim``: a DTensor with the placements in the module docstring, or
            a plain tensor (the full targets) where those are all Replicate.
        alpha: smoothing mass in [0, 1], or in [-1, 1] with ``allow_negative``
            (negative label smoothing; see :func:`labelsmooth.cross_entropy`).
        weight: ``(C,)`` class weights for all classes: a plain tensor or a
            replicated DTensor.
        ignore_index: target value left out of the loss and the mean.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; placements in the
            module docstring.
        prior: ``(C,)`` distribution to smooth towards instead of uniform.
        convention: ``"uniform"`` or ``"others"`` (``alpha / (C - 1)`` on the
            other classes), with the global ``C``.
        dim: the class dim of ``logits``.
        z_loss, softcap, return_z_loss: as in :func:`labelsmooth.cross_entropy`
            (PaLM's z-loss, Gemma 2's logit cap), inside the same two all-reduces.
        num_items_in_batch: divides the summed loss (``"mean"`` or ``"sum"``),
            as in :func:`labelsmooth.cross_entropy`; the loss is then ``Partial``
            on batch-sharding mesh dims, which makes it the way to a mean there
            (pass :func:`labelsmooth.distributed.global_num_items` over that group).
        allow_negative: accept a negative ``alpha``; its loss is unbounded below.

    Returns:
        A DTensor: a scalar, or with ``reduction="none"`` the per-position
        loss with the targets' placements. Float32 for 16-bit logits. With
        ``return_z_loss=True``, ``(loss, z_loss_part)`` with the same placements.

    Example:
        >>> import torch
        >>> from torch.distributed.device_mesh import init_device_mesh
        >>> from torch.distributed.tensor import Shard, distribute_tensor
        >>> mesh = init_device_mesh("cpu", (4,))  # doctest: +SKIP
        >>> logits = distribute_tensor(torch.randn(8, 32000), mesh, [Shard(1)])  # doctest: +SKIP
        >>> loss = dtensor_cross_entropy(logits, torch.randint(32000, (8,)), alpha=0.1)  # doctest: +SKIP

    References:
        Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language
        Models Using Model Parallelism", 2019 (the vocabulary-parallel layout).
    """
    if not is_dtensor(logits):
        raise v.fail("logits", "a torch.distributed.tensor.DTensor", type(logits).__name__, error=TypeError)
    _, dim = v.check_logits(logits, dim)
    alpha = v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    reduction = v.check_reduction(reduction)
    num_items = v.check_num_items(num_items_in_batch, reduction)
    ignore_index = v.check_int(ignore_index, "ignore_index")
    mesh, placements = logits.device_mesh, tuple(logits.placements)
    tp = _class_mesh_dim(placements, dim, logits.dim())
    target_placements = _target_placements(placements, tp, dim, logits.dim())
    if isinstance(targets, SoftTargets) or v.target_form(logits, targets, dim) != "index":
        got = getattr(targets, "shape", type(targets).__name__)
        raise v.fail("targets", "class indices (dense targets are not tensor-parallel)", got)
    local_targets = _local_targets(targets, mesh, target_placements)
    local = logits.to_local()  # differentiable: the gradient comes back as a DTensor of these placements
    sharded = _sharded_rows(
        local, local_targets, _class_shard(logits.shape[dim], mesh, tp, local.shape[dim]), dim,
        alpha=alpha, convention=convention, weight=weight, prior=prior, ignore_index=ignore_index,
        z_loss=v.check_nonnegative(z_loss, "z_loss"), softcap=v.check_softcap(softcap),
    )
    loss = _reduce(sharded, reduction, num_items, local_targets, targets.shape, mesh, target_placements)
    if not v.check_flag(return_z_loss, "return_z_loss"):
        return loss
    z_only = dataclasses.replace(sharded, rows=torch.zeros_like(sharded.rows))
    return loss, _reduce(z_only, reduction, num_items, local_targets, targets.shape, mesh, target_placements)


def _sharded_rows(
    local: Tensor, local_targets: Tensor, where: ClassShard, dim: int, *, alpha: float, convention: str,
    weight: object, prior: object, ignore_index: int, z_loss: float, softcap: float | None,
) -> ShardedRows:
    """Check the class vectors and the targets' values against the global ``C``; the rows."""
    num_classes = where.num_classes
    weight = v.check_class_vector(_replicated_vector(weight, "weight"), "weight", num_classes,
                                  distribution=False)
    prior = v.check_class_vector(_replicated_vector(prior, "prior"), "prior", num_classes,
                                 distribution=True)
    convention = v.check_convention(convention)
    check_prior_convention(prior, convention)
    v.check_index_values(local_targets, num_classes, ignore_index)
    return sharded_cross_entropy_rows(
        local.movedim(dim, -1).reshape(-1, local.shape[dim]),
        local_targets.reshape(-1).to(device=local.device, dtype=torch.long),
        smoothing=effective_alpha(alpha, num_classes, convention),
        weight=weight, prior=prior, ignore_index=ignore_index, where=where, z_loss=z_loss, softcap=softcap,
    )

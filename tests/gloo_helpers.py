"""The multi-process harness of the distributed tests, and the full-logits reference they compare against.

``spawn(job, world_size, out_dir)`` starts ``world_size`` processes on gloo
(127.0.0.1), runs ``job(rank, world_size)`` in each and returns what each
returned. Every rank passes a barrier before the group is torn down, each
process gets a bounded join, and a failure is a message, never a hang.
The jobs live at module level in the test modules (spawned processes import
them by name).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import _reference as ref

JOIN_TIMEOUT_S = 180  # a hang guard, far above the few seconds a run takes
COLLECTIVE_TIMEOUT = timedelta(seconds=60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(job: Callable[[int, int], dict], rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        result = job(rank, world_size)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        # Every rank is past its last collective before any tears gloo down: a rank
        # whose peer closed the connection mid-send aborts ("terminate called without
        # an active exception"), seen once in a CI-like run.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(job: Callable[[int, int], dict], world_size: int, out_dir: Path) -> list[dict] | str:
    """Each rank's result of ``job``, or a message saying how the workers failed."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(job, rank, world_size, port, str(out_dir)))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=JOIN_TIMEOUT_S)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    codes = [proc.exitcode for proc in procs]
    if codes != [0] * world_size:
        return f"gloo workers exited with {codes} (their output is in the captured stderr)"
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world_size)]


def cached_spawner(job: Callable[[int, int], dict], tmp_path_factory: pytest.TempPathFactory):
    """``results(world_size)``: ``spawn``'s results, one spawn per world size (failures cached too)."""
    cache: dict[int, list[dict] | str] = {}

    def results(world_size: int) -> list[dict]:
        if world_size not in cache:
            cache[world_size] = spawn(job, world_size, tmp_path_factory.mktemp(f"world{world_size}"))
        outcome = cache[world_size]
        if isinstance(outcome, str):
            pytest.fail(outcome)
        return outcome

    return results


def reference_rows(full, targets, *, alpha, convention, weight=None, prior=None, dim=-1):
    """Per-position loss from F.cross_entropy: index targets, or the dense smoothed target for a prior.

    ``full`` holds the classes on ``dim``; ``convention="others"`` becomes PyTorch's
    ``label_smoothing = alpha * C / (C - 1)``.
    """
    num_classes = full.shape[dim]
    smoothing = alpha * num_classes / (num_classes - 1) if convention == "others" else alpha
    weight = None if weight is None else weight.to(full.dtype)
    logits = full.movedim(dim, 1)
    if prior is None and smoothing >= 0:
        return F.cross_entropy(logits, targets, weight=weight, reduction="none", label_smoothing=smoothing)
    # PyTorch has no prior, and a negative label_smoothing silently gives plain cross-entropy there:
    # the oracle's dense target q = (1 - a) onehot + a u, zero at ignored positions, instead.
    dense = ref.smooth(ref.one_hot(targets, num_classes), smoothing, prior=prior).to(full.dtype)
    return F.cross_entropy(logits, dense.movedim(-1, 1), weight=weight, reduction="none")


def reference_loss_and_grad(logits, targets, grad_output, *, alpha, convention, reduction, weight=None,
                            prior=None, dim=-1, num_items=None, z_loss=0.0, softcap=None):
    """Loss and full-logits gradient from F.cross_entropy in float64 (``grad_output`` for ``"none"``).

    ``softcap`` caps the logits first (``k tanh(x / k)``, by hand); ``z_loss`` adds
    :func:`reference_z_part`, whose mean counts the positions without class weights.
    """
    full = logits.detach().double().clone().requires_grad_()  # a float64 input stays untouched
    capped = full if softcap is None else softcap * torch.tanh(full / softcap)
    per_row = reference_rows(capped, targets, alpha=alpha, convention=convention, weight=weight, prior=prior,
                             dim=dim)
    loss = reference_loss(per_row, targets, reduction, weight=weight, num_items=num_items)
    loss = loss + reference_z_part(capped, targets, z_loss=z_loss, reduction=reduction, dim=dim,
                                   num_items=num_items)
    loss.backward(grad_output.double() if reduction == "none" else None)
    return loss.detach(), full.grad


def reference_z_part(capped, targets, *, z_loss, reduction, dim=-1, num_items=None):
    """PaLM's z-loss ``z_loss * logsumexp^2`` per position not ignored, reduced without class weights."""
    rows = z_loss * torch.logsumexp(capped.double(), dim).square() * (targets != -100)
    return reference_loss(rows, targets, reduction, num_items=num_items)


def reference_loss(per_row, targets, reduction, *, weight=None, num_items=None):
    """Reduce ``reference_rows`` by PyTorch's index-target rule: the mean divides by sum_i w_{y_i}."""
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    valid = targets != -100
    row_weight = valid.to(per_row.dtype)
    if weight is not None:
        row_weight = weight.to(per_row.dtype)[torch.where(valid, targets, 0)] * valid
    count = row_weight.sum() if num_items is None else num_items
    return per_row.sum() / max(float(count), 1.0)

"""The entry point of the index-target kernels: picks the kernel for a call."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch, reference
from labelsmooth.kernels.chunked import chunked_cross_entropy_rows
from labelsmooth.kernels.fused import FusedIndexCrossEntropy
from labelsmooth.kernels.rowmath import outputs, target_mask

__all__ = ["index_cross_entropy_rows", "index_cross_entropy_z_loss"]


def index_cross_entropy_rows(
    logits: Tensor,
    targets: Tensor,
    target_weights: Tensor | None = None,
    *,
    smoothing: float,
    prior: Tensor | None,
    weight: Tensor | None,
    ignore_index: int,
    inplace_backward: bool = False,
    chunk_size: int | None = None,
    divisor: Tensor | float | None = None,
    softcap: float | None = None,
) -> Tensor:
    """Per-row smoothed cross-entropy; no ``(M, C)`` buffer but the gradient.

    Runs the fused kernel (:mod:`labelsmooth.kernels.fused`) when
    :func:`labelsmooth.kernels.backend` says ``"inductor"`` (or ``"triton"``, see
    :mod:`labelsmooth.kernels.dispatch`), else the chunked
    one (:mod:`labelsmooth.kernels.chunked`); ``inplace_backward`` and
    ``chunk_size`` always run the chunked kernel, and ``weight`` or ``prior``
    that require grad the plain log-softmax kernel
    (:mod:`labelsmooth.kernels.reference`).

    Args:
        logits: ``(M, C)``, or ``(B, C, S)`` with the classes on dimension 1
            and ``M = B * S`` positions in ``(B, S)`` order (segmentation maps,
            no class-last copy). Any floating dtype; 16-bit logits are
            computed in float32 and their gradient rounded once.
        targets: ``(M,)`` or ``(M, K)`` int64 class indices or ``ignore_index``.
        target_weights: ``(M, K)`` mixing weights ``lam``; ``None`` means 1.
        smoothing: ``s`` (may exceed 1 after the "others" conversion).
        prior: ``(C,)`` smoothing distribution, ``None`` for uniform.
        weight: ``(C,)`` class weights or ``None``.
        ignore_index: index value that contributes nothing.
        inplace_backward: write the gradient over ``logits``' storage instead
            of allocating one. Hazard: after backward the logits hold the
            gradient, so anything that reads them later (a metric, another
            loss, a second backward through ``retain_graph``) sees wrong
            values. Use it only when the logits are dead after the loss.
            Ignored under ``torch.compile``, which cannot alias them.
        chunk_size: rows (``B`` entries for ``(B, C, S)`` logits) per chunk of
            the chunked kernel.
        divisor: ``None`` to return the row losses; else a float or a 0-dim
            tensor (no gradient) to return ``sum_i loss_i / divisor`` (the
            ``"sum"`` and ``"mean"`` reductions), whose gradient the forward
            then writes for an incoming gradient of 1.
        softcap: ``k`` > 0 to compute everything on ``k tanh(logits / k)``
            (Gemma 2's logit softcapping; the gradient goes through the tanh).

    Returns:
        ``(M,)`` losses, or their sum over ``divisor``, in the compute dtype.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> loss = index_cross_entropy_rows(
        ...     logits, torch.tensor([0]), smoothing=0.1, prior=None, weight=None, ignore_index=-100)
        >>> round(loss.item(), 4)
        0.3729
    """
    loss: Tensor = _run(
        logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
        ignore_index=ignore_index, inplace_backward=inplace_backward, chunk_size=chunk_size,
        divisor=divisor, z_loss=0.0, z_divisor=None, softcap=softcap,
    )
    return loss


def index_cross_entropy_z_loss(
    logits: Tensor,
    targets: Tensor,
    target_weights: Tensor | None = None,
    *,
    z_loss: float,
    z_divisor: Tensor | float | None = None,
    smoothing: float,
    prior: Tensor | None,
    weight: Tensor | None,
    ignore_index: int,
    inplace_backward: bool = False,
    chunk_size: int | None = None,
    divisor: Tensor | float | None = None,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`index_cross_entropy_rows` plus PaLM's z-loss: ``(loss, z-loss part)``.

    Row ``i`` adds ``z_loss * v_i * lse_i^2``, with ``lse_i`` the logsumexp of
    its (capped) logits and ``v_i`` 1 where the row has target mass
    (:func:`~labelsmooth.kernels.rowmath.target_mask`), else 0. With
    ``divisor`` given both outputs are reduced: ``loss = sum_i ce_i / divisor
    + sum_i z_i / z_divisor`` (``z_divisor`` defaults to ``divisor``),
    ``z-loss part = sum_i z_i / z_divisor``. Both outputs are differentiable;
    the loss already contains the z-loss part. Other arguments as
    :func:`index_cross_entropy_rows`.

    Example:
        >>> import torch
        >>> loss, z = index_cross_entropy_z_loss(
        ...     torch.zeros(1, 4), torch.tensor([0]), z_loss=0.5, smoothing=0.0, prior=None,
        ...     weight=None, ignore_index=-100)
        >>> round(z.item(), 4), round((loss - z).item(), 4)  # 0.5 * log(4)^2, log(4)
        (0.9609, 1.3863)
    """
    result = _run(
        logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
        ignore_index=ignore_index, inplace_backward=inplace_backward, chunk_size=chunk_size,
        divisor=divisor, z_loss=float(z_loss), z_divisor=z_divisor, softcap=softcap,
    )
    if isinstance(result, tuple):
        return result
    # z_loss = 0: no z-loss part to carry through the kernel.
    return result, result.new_zeros(() if divisor is not None else result.shape)


def _run(
    logits: Tensor, targets: Tensor, target_weights: Tensor | None, *, smoothing: float,
    prior: Tensor | None, weight: Tensor | None, ignore_index: int, inplace_backward: bool = False,
    chunk_size: int | None = None, divisor: Tensor | float | None = None, z_loss: float,
    z_divisor: Tensor | float | None, softcap: float | None = None,
) -> Any:
    """The kernel for one call: its loss, or ``(loss, z-loss part)`` when ``z_loss`` is not 0."""
    if (weight is not None and weight.requires_grad) or (prior is not None and prior.requires_grad):
        return _reference(
            logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
            ignore_index=ignore_index, divisor=divisor, z_loss=z_loss, z_divisor=z_divisor,
            softcap=softcap,
        )
    if logits.numel() == 0:
        # Nothing to compute; keep the graph so backward gives an empty gradient.
        rows = logits.sum(1).reshape(-1).to(compute_dtype(logits.dtype))
        loss = rows if divisor is None else rows.sum() / divisor
        return loss if z_loss == 0.0 else (loss, loss * 0)
    fused_args = (logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
                  divisor, z_loss, z_divisor, softcap)

    def chunked() -> Any:
        return chunked_cross_entropy_rows(
            *fused_args, inplace_backward=inplace_backward, chunk_size=chunk_size,
        )

    # Options that only the chunked kernel has; traced code ignores them.
    if (inplace_backward or chunk_size is not None) and not torch.compiler.is_compiling():
        return chunked()
    return dispatch.run(
        logits.device,
        inductor=lambda: FusedIndexCrossEntropy.apply(*fused_args),  # type: ignore[no-untyped-call]
        chunked=chunked,
    )


def _reference(
    logits: Tensor, targets: Tensor, target_weights: Tensor | None, *, smoothing: float,
    prior: Tensor | None, weight: Tensor | None, ignore_index: int, divisor: Tensor | float | None,
    z_loss: float, z_divisor: Tensor | float | None, softcap: float | None,
) -> Any:
    """Plain autograd (differentiable ``weight`` or ``prior``): the log-softmax kernel."""
    rows_2d = logits.movedim(1, -1).reshape(-1, logits.shape[1]) if logits.dim() == 3 else logits
    rows, lse = reference.index_cross_entropy_rows(
        rows_2d, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
        ignore_index=ignore_index, softcap=softcap,
    )
    z_mask = target_mask(targets, target_weights, ignore_index, lse.dtype) if z_loss else None
    return outputs(rows, lse, z_mask, z_loss, divisor, z_divisor)

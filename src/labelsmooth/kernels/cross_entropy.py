"""The entry point of the index-target kernels: picks the kernel for a call."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels import dispatch, reference
from labelsmooth.kernels.chunked import chunked_cross_entropy_rows
from labelsmooth.kernels.fused import FusedIndexCrossEntropy

__all__ = ["index_cross_entropy_rows"]


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
) -> Tensor:
    """Per-row smoothed cross-entropy; no ``(M, C)`` buffer but the gradient.

    Runs the fused kernel (:mod:`labelsmooth.kernels.fused`) when
    :func:`labelsmooth.kernels.backend` says ``"inductor"``, else the chunked
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
    if (weight is not None and weight.requires_grad) or (prior is not None and prior.requires_grad):
        rows_2d = logits.movedim(1, -1).reshape(-1, logits.shape[1]) if logits.dim() == 3 else logits
        rows = reference.index_cross_entropy_rows(
            rows_2d, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
            ignore_index=ignore_index,
        )
        return rows if divisor is None else rows.sum() / divisor
    if logits.numel() == 0:
        # Nothing to compute; keep the graph so backward gives an empty gradient.
        rows = logits.sum(1).reshape(-1).to(compute_dtype(logits.dtype))
        return rows if divisor is None else rows.sum() / divisor
    tracing = torch.compiler.is_compiling()
    chunked = (inplace_backward or chunk_size is not None) and not tracing
    # Traced code always takes the fused form: the outer compile generates it.
    if tracing or (not chunked and dispatch.backend(logits.device) == "inductor"):
        try:
            loss: Tensor = FusedIndexCrossEntropy.apply(  # type: ignore[no-untyped-call]
                logits, targets, target_weights, float(smoothing), prior, weight, int(ignore_index),
                divisor,
            )
            return loss
        except dispatch.COMPILE_ERRORS as error:
            if tracing:
                raise
            dispatch.give_up(logits.device, error)
    return chunked_cross_entropy_rows(
        logits, targets, target_weights, smoothing=smoothing, prior=prior, weight=weight,
        ignore_index=ignore_index, inplace_backward=inplace_backward, chunk_size=chunk_size,
        divisor=divisor,
    )

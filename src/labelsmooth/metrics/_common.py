"""What the metrics share: the checks of ``(probs, targets)`` and ``logits``, the top label, and
running sums averaged over tied keys."""

from __future__ import annotations

import torch
from torch import Tensor

from labelsmooth import _validation as v

__all__: list[str] = []


def _check_targets(targets: object, num_samples: int, num_classes: int) -> Tensor:
    """Check integer ``targets (N,)`` with values in ``[0, C)``."""
    targets = v.check_tensor(targets, "targets")
    if targets.shape != (num_samples,):
        raise v.fail("targets", f"class indices of shape ({num_samples},)", tuple(targets.shape))
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise v.fail("targets", "an integer tensor of class indices", targets.dtype, error=TypeError)
    v.check_index_values(targets, num_classes, None)
    return targets


def _check_probs(probs: object, targets: object) -> tuple[Tensor, Tensor]:
    """Check ``probs (N, C)`` with entries in [0, 1] and ``targets (N,)``."""
    probs = v.check_tensor(probs, "probs")
    if probs.dim() != 2 or probs.shape[1] < 1:
        raise v.fail("probs", "a tensor of shape (N, C)", tuple(probs.shape))
    if not probs.is_floating_point():
        raise v.fail("probs", "a floating-point tensor", probs.dtype, error=TypeError)
    targets = _check_targets(targets, probs.shape[0], probs.shape[1])
    # A little slack above 1: exp(log_softmax) can round to 1 + 1e-7. Tier 3: contents, skipped
    # under content_checks(False) (compare's analysis checks its logits once, not once per metric).
    if not v.checks_contents():
        return probs, targets
    if not bool(torch.isfinite(probs).all()) or bool(((probs < 0) | (probs > 1 + 1e-6)).any()):
        raise v.fail("probs", "probabilities in [0, 1]", "values outside [0, 1] or not finite")
    return probs, targets


def _check_distributions(probs: Tensor) -> None:
    """At least one row, and every row sums to 1 up to the rounding of its dtype."""
    if probs.shape[0] == 0:
        raise v.fail("probs", "at least one sample, shape (N, C) with N >= 1", tuple(probs.shape))
    if not v.checks_contents():
        return
    # A 16-bit softmax row can miss 1 by a few units in its last place (bfloat16: 2^-8 each).
    atol = max(v.PROBABILITY_ATOL, 2 * torch.finfo(probs.dtype).eps)
    error = (probs.detach().double().sum(dim=1) - 1.0).abs()
    worst = int(error.argmax())
    if float(error[worst]) > atol:
        total = float(probs[worst].double().sum())
        raise v.fail("probs", f"rows that sum to 1 (within {atol:g})", f"row {worst} summing to {total:.6g}")


def _top_label(probs: Tensor, targets: Tensor, *, distributions: bool = False) -> tuple[Tensor, Tensor]:
    """Check ``probs (N, C)`` and ``targets (N,)``; return ``(confidence, correct)``.

    With ``distributions``, also require ``N >= 1`` and rows that sum to 1.
    """
    probs, targets = _check_probs(probs, targets)
    if distributions:
        _check_distributions(probs)
    confidence, prediction = probs.max(dim=1)
    return confidence.clamp(max=1.0), (prediction == targets.to(prediction.device))


def _check_n_bins(n_bins: object) -> int:
    number = v.check_int(n_bins, "n_bins")
    if number < 1:
        raise v.fail("n_bins", "an int >= 1", number)
    return number


def _tie_averaged_cumsum(keys: Tensor, values: Tensor) -> Tensor:
    """Running sums of ``values`` along sorted ``keys``, averaged over the orders of tied keys.

    Returns ``S`` of shape ``(N + 1,)`` with ``S[k]`` the expected sum of the
    first ``k`` values when every run of equal keys is put in a uniformly
    random order: inside a run the sum rises linearly from its value before the
    run to its value after it. ``keys`` must be sorted (either direction).
    """
    _, counts = torch.unique_consecutive(keys, return_counts=True)
    total = torch.cat([values.new_zeros(1), values.cumsum(0)])
    ends = counts.cumsum(0)
    starts = ends - counts
    run = torch.repeat_interleave(torch.arange(counts.numel(), device=keys.device), counts)
    position = torch.arange(1, keys.numel() + 1, device=keys.device) - starts[run]
    before = total[starts[run]]
    rise = (total[ends[run]] - before) * position / counts[run]
    return torch.cat([values.new_zeros(1), before + rise])

"""Temperature scaling: the NLL-optimal temperature of Guo et al. for logits."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.metrics._common import _check_targets

__all__ = ["TEMPERATURE_BOUNDS", "fit_temperature"]

#: The interval :func:`fit_temperature` searches unless ``bounds`` says otherwise. A fit at
#: either end means the NLL was still falling there (see :func:`fit_temperature`).
TEMPERATURE_BOUNDS = (0.01, 100.0)


def _check_bounds(bounds: object) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite temperatures with ``0 < low < high``."""
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise v.fail("bounds", "a pair (low, high) of temperatures", bounds, error=TypeError)
    low = v.check_nonnegative(bounds[0], "bounds")
    high = v.check_nonnegative(bounds[1], "bounds")
    if not 0.0 < low < high:
        raise v.fail("bounds", "temperatures with 0 < low < high", tuple(bounds))
    return low, high


def _check_logits_targets(logits: object, targets: object) -> tuple[Tensor, Tensor]:
    """Finite floating-point ``logits (N, C)`` with ``N >= 1``, ``C >= 2``, and their ``targets (N,)``."""
    logits = v.check_tensor(logits, "logits")
    if not logits.is_floating_point():
        raise v.fail("logits", "a floating-point tensor", logits.dtype, error=TypeError)
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise v.fail("logits", "a tensor of shape (N, C) with N >= 1 and C >= 2", tuple(logits.shape))
    targets = _check_targets(targets, logits.shape[0], logits.shape[1])
    if not bool(torch.isfinite(logits).all()):
        raise v.fail("logits", "finite values", "a tensor with NaN or infinite entries")
    return logits, targets


def _nll_derivatives(shifted: Tensor, target_logit: Tensor, beta: float) -> tuple[float, float]:
    """First and second derivative in ``beta = 1/T`` of the mean NLL of ``softmax(beta * z)``.

    ``d/dbeta = mean_i (E_p[z_i] - z_iy)`` and ``d2/dbeta2 = mean_i Var_p[z_i]``
    (the NLL is convex in ``beta``). Rows go in chunks of about 2^22 entries.
    """
    n, c = shifted.shape
    rows = max(1, 2**22 // c)
    first = second = 0.0
    for start in range(0, n, rows):
        z = shifted[start : start + rows]
        p = torch.softmax(beta * z, dim=1)
        mean = (p * z).sum(dim=1)
        first += float((mean - target_logit[start : start + rows]).sum())
        second += float((p * (z - mean[:, None]).square()).sum())
    return first / n, second / n


def fit_temperature(
    logits: Tensor, targets: Tensor, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The temperature that minimizes the NLL of ``softmax(logits / T)`` (temperature scaling).

    .. math::
        T^\\star = \\arg\\min_{T \\in [T_{lo}, T_{hi}]} -\\frac{1}{N} \\sum_{i=1}^{N}
        \\log \\operatorname{softmax}(z_i / T)_{y_i}

    Guo et al. fit ``log T`` (so that ``T > 0``) on a held-out split. The NLL is
    convex in ``beta = 1/T``, so the minimizer is unique and is the root of
    ``dNLL/dbeta``: Newton steps in ``beta`` inside a bracket that shrinks every
    step (bisection in ``log beta`` when a step leaves it), in float64, to a
    relative 1e-10. The result depends only on the inputs (no random start, no
    learning rate), and nothing is written to ``logits``.

    If the NLL still falls at a bound (a split the logits separate perfectly
    falls towards ``T -> 0``; logits no better than chance rise towards
    ``T -> inf``) that bound is returned with a ``RuntimeWarning``. Rows whose
    logits are all equal have NLL ``log C`` at every ``T``; if every row is like
    that the NLL is flat and 1.0 is returned.

    Args:
        logits: ``(N, C)`` finite logits, ``N >= 1``, ``C >= 2``.
        targets: ``(N,)`` class indices in ``[0, C)``.
        bounds: the interval ``(T_lo, T_hi)`` to search, ``0 < T_lo < T_hi``
            (:data:`TEMPERATURE_BOUNDS` by default).

    Returns:
        ``T*`` as a Python float; divide the logits by it before the softmax.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
        >>> # two of three right with margin 2: the NLL is lowest where softmax(2 / T) = 2/3
        >>> round(fit_temperature(logits, torch.tensor([0, 1, 1])), 4)  # 2 / log 2
        2.8854

    References:
        Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
        Networks", ICML 2017. Müller, Kornblith and Hinton, "When Does Label
        Smoothing Help?", NeurIPS 2019 (temperature scaling as the baseline).
    """
    low, high = _check_bounds(bounds)
    logits, targets = _check_logits_targets(logits, targets)
    z = logits.detach().double()
    # Shifting each row by its maximum leaves the NLL unchanged and keeps beta * z <= 0.
    z = z - z.amax(dim=1, keepdim=True)
    if not bool((z.amin(dim=1) < 0).any()):
        return 1.0
    z_y = z.gather(1, targets.to(z.device).view(-1, 1)).squeeze(1)
    beta_low, beta_high = 1.0 / high, 1.0 / low
    if _nll_derivatives(z, z_y, beta_low)[0] >= 0:
        return _at_bound(high)
    if _nll_derivatives(z, z_y, beta_high)[0] <= 0:
        return _at_bound(low)
    return 1.0 / _slope_root(z, z_y, beta_low, beta_high)


def _slope_root(shifted: Tensor, target_logit: Tensor, beta_low: float, beta_high: float) -> float:
    """The ``beta`` in ``(beta_low, beta_high)`` where the NLL's slope changes sign from - to +.

    Newton steps from ``beta = 1``; a step that leaves the bracket is replaced
    by the bracket's geometric mean, and every evaluation shrinks the bracket.
    """
    beta = min(max(1.0, beta_low), beta_high)
    for _ in range(200):
        slope, curvature = _nll_derivatives(shifted, target_logit, beta)
        if slope == 0.0:
            break
        if slope < 0:
            beta_low = beta
        else:
            beta_high = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if not beta_low < step < beta_high:
            step = math.sqrt(beta_low * beta_high)
        # The slope is a mean of N terms, exact to about 1e-16 * N relative: 1e-10 is as far as it resolves.
        converged = abs(step - beta) <= 1e-10 * beta or beta_high - beta_low <= 1e-10 * beta
        beta = step
        if converged:
            break
    return beta


def _at_bound(temperature: float) -> float:
    """Return a bound of the temperature search, with a warning that the NLL had not turned."""
    warnings.warn(
        f"fit_temperature: the NLL is still decreasing at the bound T = {temperature:g}, so its minimum "
        "lies beyond it; returning the bound (widen `bounds`, or check the logits and targets)",
        RuntimeWarning,
        stacklevel=3,
    )
    return temperature

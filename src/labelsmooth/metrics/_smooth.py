"""Smooth ECE (Błasiok and Nakkiran): the top-label residuals smoothed by a reflected Gaussian."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.metrics._common import _top_label

__all__ = ["smooth_ece", "smooth_ece_of"]


#: Nodes of the grid that :func:`smooth_ece` bins the residuals onto, and its smallest bandwidth.
#: With ``h = 2^-14`` the binning changes smECE by about ``(h / sigma)^2 / 8`` relative: 5e-4 at
#: ``sigma = 1e-3`` (the floor relplot uses too), 5e-6 at 1e-2.
_SMOOTH_GRID = 2**14
_MIN_BANDWIDTH = 1e-3


def _residual_spectrum(confidence: Tensor, residual: Tensor) -> Tensor:
    """Cosine coefficients ``C_m = (1/N) sum_i r_i cos(pi m x_i)``, m < G, after linear binning.

    The residuals go to the two nearest midpoints ``(g + 1/2) / G`` of a grid of
    ``G`` nodes; a neighbour beyond 0 or 1 is the mirror image of the edge node,
    so its share stays there (the kernel reflects at both ends).
    """
    size = _SMOOTH_GRID
    position = confidence * size - 0.5
    left = position.floor()
    weight = position - left
    left_index = left.long()
    mass = torch.zeros(size, dtype=torch.float64)
    mass.index_add_(0, left_index.clamp(0, size - 1), residual * (1 - weight))
    mass.index_add_(0, (left_index + 1).clamp(0, size - 1), residual * weight)
    # DCT-II of the binned masses through a zero-padded FFT of length 2G.
    modes = torch.arange(size, dtype=torch.float64)
    spectrum = torch.fft.fft(mass, n=2 * size)[:size] * torch.exp(-0.5j * math.pi * modes / size)
    return torch.real(spectrum) / confidence.numel()


def _phased(spectrum: Tensor) -> Tensor:
    """``eps_m C_m exp(i pi m / 2G)`` (``eps_0 = 1``, else 2): the DCT-III input up to the damping."""
    size = spectrum.numel()
    modes = torch.arange(size, dtype=torch.float64)
    weights = torch.full((size,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    return spectrum * weights * torch.exp(0.5j * math.pi * modes / size)


def _smooth_ece_at(phased: Tensor, bandwidth: float) -> float:
    """``int_0^1 |s(t)| dt`` for the residual smoothed by the reflected Gaussian of ``bandwidth``.

    On [0, 1] with reflections at both ends the Gaussian is the Neumann heat
    kernel, ``K(t, x) = 1 + 2 sum_m exp(-(pi m sigma)^2 / 2) cos(pi m t) cos(pi m x)``,
    so smoothing damps each cosine coefficient. ``s`` is evaluated at the grid's
    midpoints by a DCT-III (FFT of length 2G) and integrated by the midpoint rule.
    """
    size = phased.numel()
    # Modes damped below exp(-40) are left at 0 (exp of a large negative number is also slow).
    kept = min(size, math.ceil(math.sqrt(80.0) / (math.pi * bandwidth)))
    modes = torch.arange(kept, dtype=torch.float64)
    padded = torch.zeros(2 * size, dtype=torch.complex128)
    padded[:kept] = phased[:kept] * torch.exp(-0.5 * (math.pi * modes * bandwidth) ** 2)
    smoothed = torch.fft.ifft(padded).real[:size] * (2 * size)
    return float(smoothed.abs().mean())


def _smooth_ece_fixpoint(phased: Tensor) -> float:
    """smECE at the bandwidth ``sigma*`` with ``smECE_sigma* = sigma*``, by bisection on [1e-3, 1].

    ``smECE_sigma`` does not increase with ``sigma``, so ``smECE_sigma - sigma``
    changes sign once. A fixpoint below the floor is reported at the floor.
    """
    low, high = _MIN_BANDWIDTH, 1.0
    if _smooth_ece_at(phased, high) >= high:
        return _smooth_ece_at(phased, high)
    if _smooth_ece_at(phased, low) <= low:
        return _smooth_ece_at(phased, low)
    while high - low > 1e-7:
        middle = 0.5 * (low + high)
        if _smooth_ece_at(phased, middle) > middle:
            low = middle
        else:
            high = middle
    return _smooth_ece_at(phased, high)


def smooth_ece(probs: Tensor, targets: Tensor, *, bandwidth: float | None = None) -> float:
    """Smooth ECE (Błasiok and Nakkiran): the top-label residuals smoothed by a reflected Gaussian.

    With confidences ``c_i = max_k p_ik``, correctness ``a_i`` and the Gaussian
    kernel ``K_sigma`` reflected at 0 and 1 (the sum of ``phi_sigma`` over all
    mirror images of ``x`` in the lines 0 and 1), the smoothed residual and its
    calibration error are

    .. math::
        s_\\sigma(t) = \\frac{1}{N} \\sum_{i=1}^{N} K_\\sigma(t, c_i)\\,(a_i - c_i), \\qquad
        \\mathrm{smECE}_\\sigma = \\int_0^1 |s_\\sigma(t)| \\,dt

    ``smECE_sigma`` does not increase with ``sigma``; the Smooth ECE is its
    value at the unique fixpoint ``smECE_sigma* = sigma*``, found by bisection
    to 1e-7 in ``sigma``. Because of the fixpoint the result is also the
    bandwidth. A fixpoint below 0.001 is reported at ``sigma = 0.001`` (relplot's
    floor too), so values under 0.001 mean "calibrated to that resolution".

    Computed in float64 by binning the residuals onto 2^14 nodes and smoothing
    in the cosine basis, where the reflected kernel is diagonal (``O(N)`` plus
    one FFT per bandwidth). relplot approximates the same kernel (coarser grid,
    one mirror image per side, the Gaussian cut at distance 0.5, a search that
    stops at 2^-10): it agrees to about 1e-3 from a few dozen samples on (up to
    3e-3 on 2 to 10 samples, whose bandwidth is large), except that it gives
    confidences within 0.001 of 0 or 1 half their weight (its reflection misses
    the image of a point on the edge node).

    Args:
        probs: ``(N, C)`` predicted probabilities, each row summing to 1.
        targets: ``(N,)`` class indices in ``[0, C)``.
        bandwidth: ``None`` for the fixpoint, or a fixed ``sigma >= 0.001`` for
            ``smECE_sigma`` (relplot's ``smECE_sigma``).

    Returns:
        The Smooth ECE as a Python float in [0, 1].

    Example:
        >>> import torch
        >>> probs = torch.tensor([[0.75, 0.25]], dtype=torch.float64)
        >>> # one wrong sample: |s| integrates to its residual 0.75 at every bandwidth
        >>> round(smooth_ece(probs, torch.tensor([1])), 6)
        0.75
        >>> probs = torch.tensor([[0.7, 0.3]] * 10, dtype=torch.float64)
        >>> targets = torch.tensor([0] * 7 + [1] * 3)  # 70% right at confidence 0.7
        >>> smooth_ece(probs, targets) < 1e-6
        True

    References:
        Błasiok and Nakkiran, "Smooth ECE: Principled Reliability Diagrams via
        Kernel Smoothing", ICLR 2024 (the ``relplot`` package).
    """
    if bandwidth is not None:
        bandwidth = v.check_nonnegative(bandwidth, "bandwidth")
        if bandwidth < _MIN_BANDWIDTH:
            raise v.fail("bandwidth", f"None or a real number >= {_MIN_BANDWIDTH:g}", bandwidth)
    confidence, correct = _top_label(probs, targets, distributions=True)
    return smooth_ece_of(confidence.detach().double().cpu(), correct.cpu().double(), bandwidth=bandwidth)


def smooth_ece_of(confidence: Tensor, correct: Tensor, *, bandwidth: float | None = None) -> float:
    """:func:`smooth_ece` from the top-label confidence and correctness, float64 ``(N,)`` each (what a
    token-level record keeps instead of the probabilities); arguments unchecked."""
    phased = _phased(_residual_spectrum(confidence, correct - confidence))
    if bandwidth is None:
        return _smooth_ece_fixpoint(phased)
    return _smooth_ece_at(phased, bandwidth)

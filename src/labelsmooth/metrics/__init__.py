"""Calibration metrics, selective classification and temperature scaling.

Every metric is a function of ``(probs, targets)``: ``probs (N, C)`` rows of a
softmax and ``targets (N,)`` class indices; it returns a Python float computed
in float64 and never writes to its inputs. Options are keyword-only.

* binned calibration errors (:mod:`~labelsmooth.metrics._binned`):
  :func:`expected_calibration_error` and :func:`reliability_bins` (equal-width
  top-label bins, with the edge rule of the library you compare against),
  :func:`adaptive_ece` (equal-mass bins), :func:`classwise_ece` (equal-width
  bins of every class's probability); :data:`ECE_BINS` bins unless ``n_bins``
  says otherwise;
* :func:`smooth_ece`: Błasiok and Nakkiran's kernel-smoothed ECE;
* :func:`brier_score`; :func:`aurc`, the area under the risk-coverage curve
  (selective classification);
* :func:`fit_temperature`: the NLL-optimal temperature of Guo et al. for
  logits, searched in :data:`TEMPERATURE_BOUNDS` unless ``bounds`` says otherwise.

Two input contracts. The metrics added with temperature scaling (all but the
ECE and its bins) refuse ``N = 0`` (an empty mean has no value) and rows that
do not sum to 1 within ``max(1e-3, 2 eps)`` of their dtype, so that a tensor of
logits or of independent sigmoids is not scored as a distribution. The ECE and
its bins keep their older contract: 0 for ``N = 0``, row sums unchecked.

Only torch is used, so this package is part of the core.
"""

from labelsmooth.metrics._binned import (
    BINNINGS,
    ECE_BINS,
    ReliabilityBins,
    adaptive_ece,
    classwise_ece,
    expected_calibration_error,
    reliability_bins,
)
from labelsmooth.metrics._scores import brier_score
from labelsmooth.metrics._selective import aurc
from labelsmooth.metrics._smooth import smooth_ece
from labelsmooth.metrics._temperature import TEMPERATURE_BOUNDS, fit_temperature

__all__ = [
    "BINNINGS",
    "ECE_BINS",
    "TEMPERATURE_BOUNDS",
    "ReliabilityBins",
    "adaptive_ece",
    "aurc",
    "brier_score",
    "classwise_ece",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "smooth_ece",
]

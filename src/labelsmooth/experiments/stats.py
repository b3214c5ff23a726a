"""Means and 95% confidence intervals over seeds (Student's t)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["NOT_COMPARABLE", "above_rate", "inside_noise", "mean_ci", "paired_difference", "t_quantile"]

#: The verdict of a comparison that involves a run that did not learn.
NOT_COMPARABLE = "not comparable: a run did not learn"


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """``(mean, half-width)`` of the ``level`` t interval; half-width ``None`` for one value.

    Example:
        >>> mean, half = mean_ci([1.0, 2.0, 3.0])
        >>> mean, round(half, 4)
        (2.0, 2.4841)
    """
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1))
    return mean, t_quantile(n - 1) * sd / math.sqrt(n)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> tuple[float, float | None]:
    """Mean and t-interval half-width of ``values[i] - baseline[i]`` (runs paired by seed)."""
    return mean_ci([a - b for a, b in zip(values, baseline, strict=True)])


def inside_noise(mean: float, half_width: float | None) -> bool:
    """Whether the interval ``mean ± half_width`` contains 0 (no interval: cannot tell, so yes)."""
    return half_width is None or abs(mean) <= half_width


def above_rate(successes: int, trials: int, rate: float) -> float:
    """One-sided binomial test: the p-value of ``successes`` out of ``trials`` under a true rate of ``rate``.

    ``P(X >= successes)`` for ``X ~ Binomial(trials, rate)``; small means the
    observed rate is above ``rate``.

    Example:
        >>> round(above_rate(9, 10, 0.5), 4)
        0.0107
    """
    from scipy import stats

    return float(stats.binomtest(successes, trials, rate, alternative="greater").pvalue)

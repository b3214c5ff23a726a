"""The report's vocabulary: how a number, a summary cell and a paired comparison are written, and how
the best alpha and a given comparison are found. Shared by :mod:`.report`, :mod:`._captions` and
:mod:`._early_report`, so that every sentence of the report says a number the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments.evaluate import METRICS, clipped
from labelsmooth.experiments.stats import NOT_COMPARABLE

__all__ = [
    "HEADLINE", "ZERO", "best_row", "comparison", "difference", "formatted", "in_percent", "is_final",
    "judgement", "label_of", "metric_of", "number", "table",
]

#: Printed numbers smaller than this (in their unit) are float rounding of an exact 0: they print as 0.
ZERO = 1e-9


#: The report's headline metrics: (metric, scaling of the comparison, label).
HEADLINE = (("accuracy", "none", "Accuracy"), ("ece", "both", "ECE after temperature scaling"),
            ("nll", "none", "NLL"))


def number(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; rounding noise around 0 (``-9.25e-16``) prints as 0, NaN as n/a.

    Example:
        >>> number(-9.25e-16, "+.3g"), number(-4.16334e-17, ".3g"), number(0.0123, "+.3g")
        ('0', '0', '+0.0123')
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) < ZERO:
        value = 0.0
    text = format(value, spec)
    # "-0.0" and "+0" say a sign the number does not have.
    return text.lstrip("+-") if float(text) == 0 else text


def metric_of(key: str) -> str:
    """The metric of a summary key: ``"ece_ts"``, ``"ece_es"``, ``"ece_es_ts"`` -> ``"ece"``."""
    return key.removesuffix("_ts").removesuffix("_es")


def in_percent(key: str) -> bool:
    return metric_of(key) in METRICS and METRICS[metric_of(key)].percent


def formatted(mean: float | None, half: float | None, key: str) -> str:
    """``mean ± half`` of summary key ``key`` (rates in %; the temperature with 2 decimals)."""
    spec = (".1f" if in_percent(key) or key == "best_epoch" else ".2f" if key.startswith("temperature")
            else ".3f")
    scale = 100.0 if in_percent(key) else 1.0
    text = number(None if mean is None else mean * scale, spec)
    if half is None or mean is None or not math.isfinite(mean) or not math.isfinite(half):
        return text if half is None else f"{text} ± {number(half * scale, spec)}"
    low, high = clipped(mean, half, key)
    if (low, high) != (mean - half, mean + half):  # past a bound of the metric: the clipped interval
        return f"{text} [{number(low * scale, spec)}, {number(high * scale, spec)}]"
    return f"{text} ± {number(half * scale, spec)}"


def label_of(key: str) -> str:
    if key.startswith("temperature"):
        return "T" + (" early-stopped" if key.endswith("_es") else "")
    if key == "best_epoch":
        return "best epoch"
    metric = METRICS[metric_of(key)]
    stopped = " early-stopped" if key.endswith(("_es", "_es_ts")) else ""
    return (metric.label + stopped + (" after TS" if key.endswith("_ts") else "")
            + (" (%)" if metric.percent else ""))


def table(result: CompareResult, keys: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = [label_of(k) for k in keys] if headers is None else headers
    lines = ["| alpha | seeds | " + " | ".join(headers) + " |", "|" + "---|" * (len(keys) + 2)]
    for row in result.summary:
        cells = [formatted(row[f"{k}_mean"], row[f"{k}_ci95"], k) for k in keys]
        lines.append(f"| {row['alpha']:g} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference(c: dict[str, Any]) -> str:
    """``+1.48 ± 1.38 points``: a comparison's paired difference in the metric's unit; an interval over
    test examples (a percentile bootstrap, not symmetric) is written ``[low, high]``."""
    scale = 100.0 if in_percent(c["metric"]) else 1.0
    unit = " points" if in_percent(c["metric"]) else ""
    mean = number(c["difference_mean"] * scale, "+.3g")
    if c["interval"] == "examples":
        low, high = (number(x * scale, "+.3g") for x in c["difference_interval"])
        return f"{mean}{unit} [{low}, {high}] over test examples"
    interval = "" if c["difference_ci95"] is None else f" ± {number(c['difference_ci95'] * scale, '.3g')}"
    return f"{mean}{interval}{unit}"


def judgement(c: dict[str, Any]) -> str:
    if c["verdict"] == NOT_COMPARABLE:
        return "not comparable (a run did not learn)"
    if c["inside_noise"] is None:
        return "no interval, so no noise verdict"
    return "inside the noise" if c["inside_noise"] else f"{c['verdict']}, outside the noise"


def is_final(c: dict[str, Any]) -> bool:
    """Whether comparison ``c`` is of both sides at their final epoch."""
    return bool(c["checkpoint"] == c["alpha_checkpoint"] == "final")


def comparison(result: CompareResult, alpha: float, name: str, scaling: str,
                checkpoints: tuple[str, str] = ("final", "final")) -> dict[str, Any] | None:
    """The comparison of ``alpha`` with the baseline; ``checkpoints``: the alpha's and the baseline's."""
    return next((c for c in result.comparisons
                 if c["alpha"] == alpha and c["metric"] == name and c["scaling"] == scaling
                 and (c["alpha_checkpoint"], c["checkpoint"]) == checkpoints), None)


def best_row(result: CompareResult, key: str, *, learned_only: bool = True,
          skip: float | None = None) -> dict[str, Any] | None:
    """The summary row with the best mean of ``key`` (ties: the first alpha); ``None`` if none is finite.

    An alpha with a run that did not learn is never the best (unless ``learned_only`` is false): its mean
    is not a measure of smoothing. ``skip``: an alpha left out (the baseline).
    """
    failed = {r.alpha for r in result.not_learned} if learned_only else set()
    rows = [r for r in result.summary if r[f"{key}_mean"] is not None and math.isfinite(r[f"{key}_mean"])
            and r["alpha"] not in failed and r["alpha"] != skip]
    if not rows:
        return None
    sign = 1.0 if METRICS[metric_of(key)].higher_is_better else -1.0
    return max(rows, key=lambda r: sign * r[f"{key}_mean"])

"""The report's answer to "does smoothing beat early stopping?": the table and one sentence per
headline metric, pairing the best smoothed alpha at its final epoch with the early-stopped baseline."""

from __future__ import annotations

from typing import Any

from labelsmooth.experiments._phrases import (
    HEADLINE,
    best_row,
    comparison,
    difference,
    formatted,
    in_percent,
    judgement,
    table,
)
from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments.evaluate import METRICS
from labelsmooth.experiments.stats import NOT_COMPARABLE

__all__ = ["NO_ES_LOGITS", "NO_VALIDATION", "early_stopping_answer", "early_stopping_section",
           "early_stopping_table"]

#: Why a result has no early-stopping values.
NO_VALIDATION = ("No early stopping: there is no validation split to choose the epoch on (the split "
                 "that temperature scaling needs too).")


NO_ES_LOGITS = ("No early stopping: no run has early-stopped predictions (a record carries them as "
                "test_es_logits and val_es_logits, with meta.best_epoch).")


def _no_early_stopping(result: CompareResult) -> str | None:
    """Why there is nothing to say about early stopping, or ``None`` when some run has its values."""
    if any(r.early_stopped is not None for r in result.runs):
        return None
    return NO_ES_LOGITS if any(r.temperature is not None for r in result.runs) else NO_VALIDATION


def early_stopping_table(result: CompareResult) -> str:
    """Per alpha: the early-stopped epoch, and the headline metrics at the final epoch and early-stopped."""
    why = _no_early_stopping(result)
    if why is not None:
        return why
    keys = ["best_epoch", "accuracy", "accuracy_es", "nll", "nll_es", "ece_ts", "ece_es_ts"]
    headers = ["best epoch", "accuracy (%), final", "accuracy (%), early-stopped", "NLL, final",
               "NLL, early-stopped", "ECE after TS, final", "ECE after TS, early-stopped"]
    return table(result, keys, headers)


def _conclusion(c: dict[str, Any], what: str) -> str:
    if c["verdict"] == NOT_COMPARABLE:
        return "cannot tell: a run did not learn"
    if c["inside_noise"] is None:
        return "cannot tell: there is no interval"
    if c["inside_noise"]:
        return f"on {what} smoothing and early stopping are indistinguishable within the noise"
    better = c["verdict"] == "better"
    return f"on {what} " + ("smoothing beats early stopping" if better else "early stopping beats smoothing")


def _against_early_stopping(result: CompareResult, name: str, scaling: str, label: str) -> str | None:
    """The best smoothed alpha at its final epoch against the early-stopped baseline, on one metric."""
    scaled = "_ts" if scaling == "both" else ""
    base = result.alphas[0]
    best = best_row(result, name + scaled, skip=base)
    row = next((r for r in result.summary if r["alpha"] == base), None)
    pair = ("final", "early_stopped")
    c = None if best is None else comparison(result, best["alpha"], name, scaling, pair)
    if best is None or row is None or c is None:
        return None
    key, stopped = name + scaled, name + "_es" + scaled
    unit = "%" if in_percent(key) else ""
    mine = formatted(best[f"{key}_mean"], best[f"{key}_ci95"], key) + unit
    theirs = formatted(row[f"{stopped}_mean"], row[f"{stopped}_ci95"], stopped) + unit
    epoch = formatted(row["best_epoch_mean"], row["best_epoch_ci95"], "best_epoch")
    of = "" if result.config is None else f" of {result.config.epochs}"
    what = METRICS[name].label + (" after temperature scaling" if scaled else "")
    return (f"- **{label} against early stopping**: alpha {best['alpha']:g} at its final epoch {mine} "
            f"against alpha {base:g} early-stopped (at epoch {epoch}{of}) {theirs}, {difference(c)}: "
            f"{judgement(c)}. So {_conclusion(c, what)}.")


def early_stopping_answer(result: CompareResult) -> list[str]:
    """One sentence per headline metric: does the best smoothed alpha, trained to the end, beat the baseline
    stopped at its epoch of lowest validation NLL? (Or one line saying why there is no early stopping.)"""
    why = _no_early_stopping(result)
    if why is not None:
        return [f"- {why}"]
    lines = [line for name, scaling, label in HEADLINE
             if (line := _against_early_stopping(result, name, scaling, label)) is not None]
    return lines or ["- Nothing to compare: no smoothed alpha was paired with an early-stopped baseline."]


def early_stopping_section(result: CompareResult) -> list[str]:
    return [
        "## Against early stopping",
        "",
        "Early stopping is the free alternative to smoothing under label noise: each run also keeps the "
        "weights of its epoch with the lowest validation NLL and is measured with them (after temperature "
        "scaling, with a temperature fitted on the validation split for those weights). The answers above "
        f"pair the best smoothed alpha at its final epoch with alpha {result.alphas[0]:g} early-stopped, "
        "seed by seed; metrics.json has every pairing (`checkpoint`, `alpha_checkpoint`). The validation "
        "split that picks the epoch is the one that fits the temperature, never the test split.",
        "",
        early_stopping_table(result),
        "",
    ]

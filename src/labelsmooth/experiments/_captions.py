"""The captions of the report's figures: each claim in them computed from the result."""

from __future__ import annotations

from labelsmooth.experiments import _figures as figures
from labelsmooth.experiments._phrases import best_row, label_of, number
from labelsmooth.experiments._results import CompareResult

__all__ = ["SPARSE_BIN", "captions"]

#: A reliability bin with fewer predictions than this is called sparse in the caption.
SPARSE_BIN = 10


def _reliability_caption(result: CompareResult, *, scaled: bool = False) -> str:
    parts = []
    for alpha in result.alphas:
        bins = result.reliability(alpha, scaled=scaled)
        if bins is None:
            continue
        # Mean confidence minus accuracy over every prediction: > 0 over-confident, < 0 under-confident.
        gap = sum((c - a) * n for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"],
                                                 strict=True)) / bins["total"]
        sparse = sum(1 for n in bins["count"] if 0 < n < SPARSE_BIN)
        lean = ("over-confident" if gap > 0 else "under-confident" if gap < 0
                else "neither over- nor under-confident")
        parts.append(f"alpha {alpha:g}: {lean} on average (mean confidence minus accuracy "
                     f"{number(gap, '+.3f')}), {sparse} of the occupied bins hold fewer than {SPARSE_BIN} "
                     "predictions")
    which = ("After temperature scaling (each run's own T; runs whose fit was left out are not pooled). "
             if scaled else "")
    return (which + "Bars: accuracy per confidence bin (test predictions of all seeds pooled); hatched: "
            "the gap to the bin's mean confidence; the strip below counts the predictions per bin (log "
            "scale), so a bar drawn from a handful of predictions shows as such. The title's ECE is that of "
            "the pooled predictions drawn. " + ("; ".join(parts) + "." if parts else ""))


def _metrics_caption(result: CompareResult) -> str:
    parts = []
    for key in ("ece", "ece_ts", "nll", "nll_ts"):
        best = best_row(result, key)
        if best is not None:
            parts.append(f"{label_of(key)} is lowest at alpha {best['alpha']:g}")
    rows = [r for r in result.summary if r["temperature_mean"] is not None]
    temperatures = ", ".join(f"{r['temperature_mean']:.2f} at alpha {r['alpha']:g}" for r in rows)
    if rows:
        parts.append(f"the fitted temperature is {temperatures} (above 1: scaling softens an over-confident "
                     "model; below 1: it sharpens an under-confident one)")
    return ("Mean over seeds with its 95% interval; solid at T = 1, dashed after temperature scaling. "
            + ("; ".join(parts) + "." if parts else ""))


def _curves_caption(result: CompareResult) -> str:
    parts = []
    for alpha in result.alphas:
        epochs, losses = figures.epoch_means(result, alpha, "val_loss")
        if not losses:
            continue
        lowest = min(range(len(losses)), key=losses.__getitem__)
        parts.append(f"alpha {alpha:g}: lowest at epoch {epochs[lowest]} of {epochs[-1]} "
                     f"({losses[lowest]:.3f}; {losses[-1]:.3f} at the end)")
    if not parts:
        return "No validation split, so no validation curve."
    return "Mean validation NLL over seeds: " + "; ".join(parts) + "."


def _penultimate_caption(result: CompareResult) -> str:
    """The cluster claim, from the measured spread-to-separation ratios against the first alpha."""
    values = [(r.alpha, r.cluster_tightness()) for r in result.penultimate_runs()]
    measured = [(a, t) for a, t in values if t is not None]
    scale = ("All panels share one scale." if result.penultimate_scale == "shared"
             else "Each panel has its own scale.")
    text = ("Penultimate-layer activations of three classes (lowest seed) projected onto the plane through "
            f"those classes' last-layer weight vectors (Müller et al., 2019). {scale}")
    if not measured:
        return text
    shown = "; ".join(f"alpha {a:g}: {t:.3f}" for a, t in measured)
    text += (" Mean distance to the class centroid over mean distance between centroids (smaller is "
             f"tighter): {shown}.")
    base = dict(measured).get(result.alphas[0])
    if base is None or base == 0:
        return text
    claims = []
    for alpha, t in measured:
        if alpha == result.alphas[0]:
            continue
        ratio = t / base
        word = "tighter" if ratio < 1 else "looser" if ratio > 1 else "neither tighter nor looser"
        claims.append(f"at alpha {alpha:g} the clusters are {word} than at alpha {result.alphas[0]:g} "
                      f"(ratio {ratio:.2f})")
    if not claims:
        return text
    # The picture is one seed's (the lowest): a ratio of two runs has no interval.
    return (text + " " + "; ".join(claims).capitalize() + ". This rests on one run per alpha (the lowest "
            "seed), so it is an observation with no interval, not a measured difference.")


def captions(result: CompareResult) -> dict[str, str]:
    """The caption of every figure, each claim computed from the result."""
    return {"reliability": _reliability_caption(result),
            "reliability_ts": _reliability_caption(result, scaled=True),
            "metrics_vs_alpha": _metrics_caption(result),
            "curves": _curves_caption(result), "penultimate": _penultimate_caption(result)}

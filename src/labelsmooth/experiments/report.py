"""What ``compare`` and ``compare_runs`` write: ``metrics.json``, the figures and ``report.md``.

The report opens with one verdict per headline metric (accuracy, ECE after
temperature scaling, NLL) and the best alpha per metric, then any warning,
then where the numbers came from. Every sentence that makes a claim (a
verdict, a caption) is computed from the result. Each file is written
atomically, and everything comes from the
:class:`~._results.CompareResult`, which comes from the run records alone:
``compare_runs(out / "predictions")`` rebuilds ``compare``'s summary and
comparisons from them (the penultimate picture aside, which needs the model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelsmooth.experiments import _figures as figures
from labelsmooth.experiments._analysis import ADDITIVE, REPLICATES
from labelsmooth.experiments._files import atomic_write
from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments.evaluate import METRICS, clipped
from labelsmooth.experiments.stats import NOT_COMPARABLE, t_quantile
from labelsmooth.metrics import ECE_BINS

__all__ = [
    "HEADLINE", "atomic_write", "best_alphas", "captions", "early_stopping_answer", "early_stopping_table",
    "format_table", "metrics_table", "noise_statement",
    "number", "provenance_lines", "report_markdown", "temperature_answer", "temperature_table", "verdicts",
    "warning", "write_report"
]

#: Printed numbers smaller than this (in their unit) are float rounding of an exact 0: they print as 0.
ZERO = 1e-9
#: The report's headline metrics: (metric, scaling of the comparison, label).
HEADLINE = (("accuracy", "none", "Accuracy"), ("ece", "both", "ECE after temperature scaling"),
            ("nll", "none", "NLL"))
#: A reliability bin with fewer predictions than this is called sparse in the caption.
SPARSE_BIN = 10


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


def _base(key: str) -> str:
    """The metric of a summary key: ``"ece_ts"``, ``"ece_es"``, ``"ece_es_ts"`` -> ``"ece"``."""
    return key.removesuffix("_ts").removesuffix("_es")


def _percent(key: str) -> bool:
    return _base(key) in METRICS and METRICS[_base(key)].percent


def _format(mean: float | None, half: float | None, key: str) -> str:
    """``mean ± half`` of summary key ``key`` (rates in %; the temperature with 2 decimals)."""
    spec = (".1f" if _percent(key) or key == "best_epoch" else ".2f" if key.startswith("temperature")
            else ".3f")
    scale = 100.0 if _percent(key) else 1.0
    text = number(None if mean is None else mean * scale, spec)
    if half is None or mean is None or not math.isfinite(mean) or not math.isfinite(half):
        return text if half is None else f"{text} ± {number(half * scale, spec)}"
    low, high = clipped(mean, half, key)
    if (low, high) != (mean - half, mean + half):  # past a bound of the metric: the clipped interval
        return f"{text} [{number(low * scale, spec)}, {number(high * scale, spec)}]"
    return f"{text} ± {number(half * scale, spec)}"


def _label(key: str) -> str:
    if key.startswith("temperature"):
        return "T" + (" early-stopped" if key.endswith("_es") else "")
    if key == "best_epoch":
        return "best epoch"
    metric = METRICS[_base(key)]
    stopped = " early-stopped" if key.endswith(("_es", "_es_ts")) else ""
    return (metric.label + stopped + (" after TS" if key.endswith("_ts") else "")
            + (" (%)" if metric.percent else ""))


def _table(result: CompareResult, keys: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = [_label(k) for k in keys] if headers is None else headers
    lines = ["| alpha | seeds | " + " | ".join(headers) + " |", "|" + "---|" * (len(keys) + 2)]
    for row in result.summary:
        cells = [_format(row[f"{k}_mean"], row[f"{k}_ci95"], k) for k in keys]
        lines.append(f"| {row['alpha']:g} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(result: CompareResult) -> str:
    """The headline table the command prints: accuracy, NLL, ECE (mean IoU), the temperature, ECE and NLL
    after temperature scaling; mean ± 95% CI half-width, rates in %."""
    raw = ["accuracy", "nll", "ece", *(["miou"] if "miou" in result.metric_names else [])]
    return _table(result, [*raw, "temperature", "ece_ts", "nll_ts"])


def metrics_table(result: CompareResult, *, scaled: bool) -> str:
    """Every metric at T = 1, or (``scaled``) after temperature scaling."""
    names = [n for n in result.metric_names if not (scaled and METRICS[n].scale_invariant)]
    return _table(result, [f"{n}_ts" if scaled else n for n in names])


def temperature_table(result: CompareResult) -> str:
    """Müller et al.'s Table 3 layout, one row per alpha: ECE at T = 1, the fitted T, ECE after scaling."""
    keys = ["ece", "temperature", "ece_ts", "nll", "nll_ts", "accuracy"]
    headers = ["ECE (T = 1)", "T", "ECE (temperature-scaled)", "NLL (T = 1)", "NLL (temperature-scaled)",
               "accuracy (%)"]
    return _table(result, keys, headers)


def warning(result: CompareResult) -> str | None:
    """One line saying which runs did not learn and why (``None`` when every run learned)."""
    failed = result.not_learned
    if not failed:
        return None
    first = failed[0]
    return (f"{len(failed)} of {len(result.runs)} runs did not learn "
            f"(alpha={first.alpha:g} seed {first.seed}: "
            f"{first.check['reasons'][0]}); their comparisons are {NOT_COMPARABLE!r}")


def _difference(c: dict[str, Any]) -> str:
    """``+1.48 ± 1.38 points``: a comparison's paired difference in the metric's unit; an interval over
    test examples (a percentile bootstrap, not symmetric) is written ``[low, high]``."""
    scale = 100.0 if _percent(c["metric"]) else 1.0
    unit = " points" if _percent(c["metric"]) else ""
    mean = number(c["difference_mean"] * scale, "+.3g")
    if c["interval"] == "examples":
        low, high = (number(x * scale, "+.3g") for x in c["difference_interval"])
        return f"{mean}{unit} [{low}, {high}] over test examples"
    interval = "" if c["difference_ci95"] is None else f" ± {number(c['difference_ci95'] * scale, '.3g')}"
    return f"{mean}{interval}{unit}"


def _judgement(c: dict[str, Any]) -> str:
    if c["verdict"] == NOT_COMPARABLE:
        return "not comparable (a run did not learn)"
    if c["inside_noise"] is None:
        return "no interval, so no noise verdict"
    return "inside the noise" if c["inside_noise"] else f"{c['verdict']}, outside the noise"


def noise_statement(result: CompareResult, scaling: str = "none") -> list[str]:
    """One plain sentence per compared alpha and metric (``scaling``: see ``compare.SCALINGS``)."""
    sentences = []
    for c in (c for c in result.comparisons if c["scaling"] == scaling and _final(c)):
        name = METRICS[c["metric"]].label
        where = f"alpha={c['alpha']:g} vs alpha={c['baseline_alpha']:g}"
        diff = _difference(c)
        if c["verdict"] == NOT_COMPARABLE:
            sentences.append(f"- {name}, {where}: {diff}. **Not comparable**: a run did not learn.")
        elif c["inside_noise"] is None:
            why = _why_no_interval(result, c)
            sentences.append(f"- {name}, {where}: {diff}. **No noise verdict**: {why}.")
        elif c["inside_noise"]:
            sentences.append(f"- {name}, {where}: {diff}. **Inside the noise**: the 95% interval "
                             "of the paired difference contains 0.")
        else:
            sentences.append(f"- {name}, {where}: {diff}. Outside the noise: {c['verdict']}.")
    return sentences


def _why_no_interval(result: CompareResult, c: dict[str, Any]) -> str:
    if not result.ci:
        return "intervals were turned off (ci=False / --no-ci)"
    return (f"one paired seed, and {METRICS[c['metric']].label} has no per-example form for an interval "
            "over test examples")


def interval_statement(result: CompareResult) -> str:
    """What the intervals cover, how many comparisons there are, and that some cross by chance."""
    kinds = {c["interval"] for c in result.comparisons}
    parts = []
    if "seeds" in kinds:
        parts.append("Intervals over seeds (Student-t) cover seed-to-seed variation of training on one "
                     "fixed test split.")
    if "examples" in kinds:
        parts.append(f"Intervals over test examples (a paired bootstrap, {REPLICATES} resamples of the test "
                     "ids) cover the test sample only, not training randomness; "
                     f"{', '.join(METRICS[n].label for n in result.metric_names if n not in ADDITIVE)} "
                     "have no per-example form and get no interval there.")
    if None in kinds:
        parts.append("A comparison without an interval gets no noise verdict.")
    if any(c["interval"] == "seeds" and c["n_pairs"] == 2 for c in result.comparisons):
        parts.append(f"With two seeds the interval is {t_quantile(1):.1f} standard errors wide on each side: "
                     "too wide to inform, so run more seeds before reading these verdicts.")
    per_alpha = sum(1 for c in result.comparisons if c["alpha"] == result.alphas[-1])
    if per_alpha:
        parts.append(f"There are {per_alpha} comparisons per alpha, so at a 95% level about one in twenty "
                     "differences that are pure noise still falls outside it.")
    return " ".join(parts)


def _final(c: dict[str, Any]) -> bool:
    """Whether comparison ``c`` is of both sides at their final epoch."""
    return bool(c["checkpoint"] == c["alpha_checkpoint"] == "final")


def _comparison(result: CompareResult, alpha: float, name: str, scaling: str,
                checkpoints: tuple[str, str] = ("final", "final")) -> dict[str, Any] | None:
    """The comparison of ``alpha`` with the baseline; ``checkpoints``: the alpha's and the baseline's."""
    return next((c for c in result.comparisons
                 if c["alpha"] == alpha and c["metric"] == name and c["scaling"] == scaling
                 and (c["alpha_checkpoint"], c["checkpoint"]) == checkpoints), None)


def _best(result: CompareResult, key: str, *, learned_only: bool = True,
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
    sign = 1.0 if METRICS[_base(key)].higher_is_better else -1.0
    return max(rows, key=lambda r: sign * r[f"{key}_mean"])


def _verdict(result: CompareResult, name: str, scaling: str, label: str) -> str:
    key = name + ("_ts" if scaling == "both" else "")
    best = _best(result, key)
    if best is None and _best(result, key, learned_only=False) is not None:
        return f"- **{label}**: no best alpha: every alpha measured has a run that did not learn."
    if best is None:
        return f"- **{label}**: not measured (no finite value)."
    base = result.alphas[0]
    shown = _format(best[f"{key}_mean"], best[f"{key}_ci95"], key) + ("%" if _percent(key) else "")
    head = f"- **{label}**: best at alpha {best['alpha']:g} ({shown})"
    if best["alpha"] != base:
        c = _comparison(result, best["alpha"], name, scaling)
        if c is None:
            return f"{head}; alpha {base:g}, the baseline, was not measured the same way."
        return f"{head}, {_difference(c)} against alpha {base:g}: {_judgement(c)}."
    others = [c for a in result.alphas[1:] if (c := _comparison(result, a, name, scaling)) is not None]
    if not others:
        return f"{head}; no other alpha to compare with."
    against = "; ".join(f"alpha {c['alpha']:g} {_difference(c)} ({_judgement(c)})" for c in others)
    return f"{head}, the baseline; against it: {against}."


def verdicts(result: CompareResult) -> list[str]:
    """One sentence per headline metric (:data:`HEADLINE`): the best alpha and how it compares."""
    return [_verdict(result, name, scaling, label) for name, scaling, label in HEADLINE]


def best_alphas(result: CompareResult) -> str:
    """The best alpha (by mean over seeds) of every metric, at T = 1 and after temperature scaling."""
    def best_of(keys: list[str]) -> str:
        shown = []
        for key in keys:
            best = _best(result, key)
            alpha = "n/a" if best is None else format(best["alpha"], "g")
            shown.append(f"{METRICS[_base(key)].label} {alpha}")
        return ", ".join(shown)

    names = list(result.metric_names)
    scaled = [f"{n}_ts" for n in names if not METRICS[n].scale_invariant]
    return (f"Best alpha per metric (mean over seeds): at T = 1: {best_of(names)}; "
            f"after temperature scaling: {best_of(scaled)}.")


def _against_ts(result: CompareResult, alpha: float) -> str | None:
    base = result.alphas[0]
    row = {r["alpha"]: r for r in result.summary}
    found = {name: _comparison(result, alpha, name, "baseline") for name in ("ece", "nll")}
    ece, nll = found["ece"], found["nll"]
    if ece is None or nll is None or alpha not in row or base not in row:
        return None
    parts = []
    for name, c in (("ece", ece), ("nll", nll)):
        mine = _format(row[alpha][f"{name}_mean"], row[alpha][f"{name}_ci95"], name)
        theirs = _format(row[base][f"{name}_ts_mean"], row[base][f"{name}_ts_ci95"], name)
        parts.append(f"{METRICS[name].label} {mine} against {theirs}, {_difference(c)} ({_judgement(c)})")
    if ece["verdict"] == NOT_COMPARABLE:
        conclusion = "cannot tell: a run did not learn"
    elif ece["inside_noise"] is None:
        conclusion = "cannot tell: there is no interval"
    elif ece["inside_noise"]:
        conclusion = "on ECE the two are indistinguishable within the noise"
    elif ece["verdict"] == "better":
        conclusion = "on ECE smoothing alone calibrates better than temperature scaling"
    else:
        conclusion = "on ECE temperature scaling calibrates better than smoothing alone"
    temperature = _format(row[base]["temperature_mean"], row[base]["temperature_ci95"], "temperature")
    return (f"- alpha {alpha:g} against temperature scaling at alpha {base:g} (T = {temperature}): "
            f"{'; '.join(parts)}. So {conclusion}.")


def temperature_answer(result: CompareResult) -> list[str]:
    """The plain-words answer per alpha: "alpha 0.1 against temperature scaling at alpha 0: ..."."""
    lines = [line for alpha in result.alphas[1:] if (line := _against_ts(result, alpha)) is not None]
    return lines or ["- Nothing to compare (one alpha, or no validation split to fit a temperature on)."]


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
    return _table(result, keys, headers)


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
    best = _best(result, name + scaled, skip=base)
    row = next((r for r in result.summary if r["alpha"] == base), None)
    pair = ("final", "early_stopped")
    c = None if best is None else _comparison(result, best["alpha"], name, scaling, pair)
    if best is None or row is None or c is None:
        return None
    key, stopped = name + scaled, name + "_es" + scaled
    unit = "%" if _percent(key) else ""
    mine = _format(best[f"{key}_mean"], best[f"{key}_ci95"], key) + unit
    theirs = _format(row[f"{stopped}_mean"], row[f"{stopped}_ci95"], stopped) + unit
    epoch = _format(row["best_epoch_mean"], row["best_epoch_ci95"], "best_epoch")
    of = "" if result.config is None else f" of {result.config.epochs}"
    what = METRICS[name].label + (" after temperature scaling" if scaled else "")
    return (f"- **{label} against early stopping**: alpha {best['alpha']:g} at its final epoch {mine} "
            f"against alpha {base:g} early-stopped (at epoch {epoch}{of}) {theirs}, {_difference(c)}: "
            f"{_judgement(c)}. So {_conclusion(c, what)}.")


def early_stopping_answer(result: CompareResult) -> list[str]:
    """One sentence per headline metric: does the best smoothed alpha, trained to the end, beat the baseline
    stopped at its epoch of lowest validation NLL? (Or one line saying why there is no early stopping.)"""
    why = _no_early_stopping(result)
    if why is not None:
        return [f"- {why}"]
    lines = [line for name, scaling, label in HEADLINE
             if (line := _against_early_stopping(result, name, scaling, label)) is not None]
    return lines or ["- Nothing to compare: no smoothed alpha was paired with an early-stopped baseline."]


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
        best = _best(result, key)
        if best is not None:
            parts.append(f"{_label(key)} is lowest at alpha {best['alpha']:g}")
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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def provenance_lines(result: CompareResult) -> list[str]:
    """Versions, the command line and the Python call, the device, the times and the git commit."""
    p = result.provenance
    if not p:
        return ["- Not recorded (this result was not produced by `compare` in this process)."]
    wall = p.get("wall_seconds")
    return [
        f"- labelsmooth {p['labelsmooth']}, torch {p['torch']}, Python {p['python']}",
        f"- command line: `{p['command_line']}`",
        f"- Python call: `{p['call']}`",
        f"- device: {p['device']}",
        f"- started {p['started']}, wall time {'n/a' if wall is None else _duration(wall)}",
        f"- git commit of the working directory: {p['git_commit'] or 'none (not a git working directory)'}",
        *(f"- record `{r['path']}` (alpha {r['alpha']:g}, seed {r['seed']}): sha256 `{r['sha256']}`"
          for r in result.records),
    ]


def _opening(result: CompareResult) -> list[str]:
    """The warnings after the verdicts: runs that did not learn, an interrupted comparison, bounded fits."""
    lines = []
    text = warning(result)
    if text is not None:
        lines += [f"> **Warning: {text}.** See `runs[i][\"learned_check\"]` in metrics.json and "
                  "curves.png.", ""]
    lines += [line for text in result.warnings for line in (f"> **Warning: {text}.**", "")]
    if result.partial:
        shared = ", ".join(map(str, result.shared_seeds())) or "none"
        lines += [f"> **Partial report**: interrupted after {len(result.runs)} of "
                  f"{len(result.alphas) * len(result.seeds)} runs; `--resume` finishes the rest. The summary "
                  f"and the ranking use only the seeds every alpha finished ({shared}), and each comparison "
                  "the seeds its two alphas share.", ""]
    return lines


def temperature_flags(result: CompareResult) -> list[str]:
    """The runs whose temperature fit failed, with the reasons: no scaled value rests on them."""
    flagged = [r for r in result.runs if r.temperature_ok is False]
    if not flagged:
        return []
    runs = "; ".join(f"alpha {r.alpha:g} seed {r.seed}: {r.temperature_note}" for r in flagged)
    return [f"> **Temperature fits left out**: {len(flagged)} of {len(result.runs)} runs ({runs}). Every "
            "value after temperature scaling (means, intervals, verdicts) rests on the other runs; "
            "`n_ts` in metrics.json counts them per alpha.", ""]


def _augmentation(config: Any) -> str:
    parts = [f"{name} {value:g}" for name, value in (("MixUp", config.mixup), ("CutMix", config.cutmix))
             if value is not None]
    return (", with " + " and ".join(parts)) if parts else ""


def _trained(result: CompareResult) -> str:
    """What was trained: the model and its settings, or the records the numbers come from."""
    alphas = ", ".join(f"{a:g}" for a in result.alphas)
    config = result.config
    if config is None:
        return (f"{len(result.runs)} saved run records (listed under Provenance), alphas {alphas}, seeds "
                f"{', '.join(map(str, result.seeds))}. ")
    return (f"model `{result.settings.get('model')}`; alphas {alphas} ({config.convention} convention), "
            f"{len(result.seeds)} seeds each, {config.epochs} epochs, batches of {config.batch_size}, "
            f"lr {config.lr:g}, label noise {config.label_noise:g}{_augmentation(config)}. ")


def _setup(result: CompareResult) -> str:
    segmentation = result.task == "segmentation"
    per_pixel = " Every metric is per pixel (ignored pixels left out)." if segmentation else ""
    return (f"{result.task.capitalize()}, {result.num_classes} classes; {_trained(result)}"
            "Test-split values: mean ± half-width of the 95% Student-t interval over seeds. "
            f"ECE: {ECE_BINS} equal-width bins, top label (Guo et al.'s binning); adaptive ECE: {ECE_BINS} "
            f"equal-mass bins; classwise ECE: {ECE_BINS} bins per class; smooth ECE: Błasiok and Nakkiran's "
            "kernel estimate; AURC: area under the risk-coverage curve. Temperature scaling: one T per run, "
            f"the NLL minimizer on the validation split (Guo et al., 2017).{per_pixel}")


def _figure(name: str, title: str, caption: str) -> list[str]:
    return [f"## {title}", "", f"![{title.lower()}]({name}.png)", "",
            f"{caption} (Also as `{name}.svg`.)", ""]


def _early_stopping_section(result: CompareResult) -> list[str]:
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


def report_markdown(result: CompareResult) -> str:
    notes = captions(result)
    base = result.alphas[0]
    return "\n".join([
        f"# Does label smoothing help on `{result.dataset}`?",
        "",
        *temperature_flags(result),
        *verdicts(result),
        "",
        *early_stopping_answer(result),
        "",
        best_alphas(result),
        "",
        *_opening(result),
        "## Provenance",
        "",
        *provenance_lines(result),
        "",
        "## Setup",
        "",
        _setup(result),
        "",
        *[f"- {note}" for note in result.notes],
        *([""] if result.notes else []),
        "## Against temperature scaling (Müller et al., 2019, Table 3)",
        "",
        temperature_table(result),
        "",
        *temperature_answer(result),
        "",
        *_early_stopping_section(result),
        "## Every metric at T = 1",
        "",
        metrics_table(result, scaled=False),
        "",
        "## Every metric after temperature scaling",
        "",
        metrics_table(result, scaled=True),
        "",
        "## Which differences are inside the noise",
        "",
        f"Each alpha is compared with alpha={base:g} run by run (same seed: same initialization, "
        "data order and label noise); a difference is inside the noise when the 95% interval of the paired "
        "difference contains 0. A comparison that involves a run that did not learn (test accuracy not above "
        "the majority-class rate, one-sided binomial test at 1%, or a training loss that became "
        "non-finite or ended above its first epoch's) is not comparable. " + interval_statement(result)
        + " At T = 1:",
        "",
        *(noise_statement(result) or ["- Only one alpha was run: nothing to compare."]),
        "",
        "Both temperature-scaled:",
        "",
        *(noise_statement(result, "both") or ["- Nothing to compare."]),
        "",
        *_figure("metrics_vs_alpha", "Metrics against alpha", notes["metrics_vs_alpha"]),
        *_figure("curves", "Training curves", notes["curves"]),
        *_figure("reliability", "Reliability diagrams", notes["reliability"]),
        *_figures(result, notes),
    ])


def _figures(result: CompareResult, notes: dict[str, str]) -> list[str]:
    """The figures that may be missing: each drawn, or a line saying why not."""
    drawn = figures.figure_names(result)
    title = "Reliability diagrams after temperature scaling"
    lines = (_figure("reliability_ts", title, notes["reliability_ts"]) if "reliability_ts" in drawn
             else [f"## {title}", "", "Not drawn: no run has a trusted temperature fit.", ""])
    if "penultimate" in drawn:
        return lines + _figure("penultimate", "Penultimate layer", notes["penultimate"])
    why = next((n for n in result.notes if n.startswith("No penultimate-layer picture")),
               "No penultimate-layer picture: no run has one.")
    return [*lines, "## Penultimate layer", "", why, ""]


_DRAW = {"reliability": figures.reliability_figure, "reliability_ts": figures.scaled_reliability_figure,
         "metrics_vs_alpha": figures.metrics_figure, "curves": figures.curves_figure,
         "penultimate": figures.penultimate_figure}


def write_report(result: CompareResult, out: Path) -> list[Path]:
    """Write ``metrics.json``, each figure as PNG and SVG, and ``report.md`` into ``out`` (created if needed).

    Everything is rendered before the first file is written, and each file is
    written atomically, so ``out`` never holds half a file.
    """
    out.mkdir(parents=True, exist_ok=True)
    # Non-finite numbers (a run whose loss diverged) become null: JSON has no NaN.
    document = json.loads(json.dumps(result.to_dict()), parse_constant=lambda _: None)
    files = {"metrics.json": (json.dumps(document, indent=2) + "\n").encode()}
    for name in figures.figure_names(result):
        files[f"{name}.png"], files[f"{name}.svg"] = figures.render(_DRAW[name](result))
    files["report.md"] = report_markdown(result).encode()
    paths = []
    for name, data in files.items():
        atomic_write(out / name, data)
        paths.append(out / name)
    return paths

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
from pathlib import Path
from typing import Any

from labelsmooth.experiments import _figures as figures
from labelsmooth.experiments._analysis import ADDITIVE, REPLICATES
from labelsmooth.experiments._captions import captions
from labelsmooth.experiments._early_report import (
    early_stopping_answer,
    early_stopping_section,
    early_stopping_table,
)
from labelsmooth.experiments._files import atomic_write
from labelsmooth.experiments._phrases import (
    HEADLINE,
    best_row,
    comparison,
    difference,
    formatted,
    in_percent,
    is_final,
    judgement,
    metric_of,
    number,
    table,
)
from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments.evaluate import METRICS
from labelsmooth.experiments.stats import NOT_COMPARABLE, t_quantile
from labelsmooth.metrics import ECE_BINS

__all__ = [
    "HEADLINE", "atomic_write", "best_alphas", "captions", "early_stopping_answer", "early_stopping_table",
    "format_table", "metrics_table", "noise_statement",
    "number", "provenance_lines", "report_markdown", "temperature_answer", "temperature_table", "verdicts",
    "warning", "write_report"
]


def format_table(result: CompareResult) -> str:
    """The headline table the command prints: accuracy, NLL, ECE (mean IoU), the temperature, ECE and NLL
    after temperature scaling; mean ± 95% CI half-width, rates in %."""
    raw = ["accuracy", "nll", "ece", *(["miou"] if "miou" in result.metric_names else [])]
    return table(result, [*raw, "temperature", "ece_ts", "nll_ts"])


def metrics_table(result: CompareResult, *, scaled: bool) -> str:
    """Every metric at T = 1, or (``scaled``) after temperature scaling."""
    names = [n for n in result.metric_names if not (scaled and METRICS[n].scale_invariant)]
    return table(result, [f"{n}_ts" if scaled else n for n in names])


def temperature_table(result: CompareResult) -> str:
    """Müller et al.'s Table 3 layout, one row per alpha: ECE at T = 1, the fitted T, ECE after scaling."""
    keys = ["ece", "temperature", "ece_ts", "nll", "nll_ts", "accuracy"]
    headers = ["ECE (T = 1)", "T", "ECE (temperature-scaled)", "NLL (T = 1)", "NLL (temperature-scaled)",
               "accuracy (%)"]
    return table(result, keys, headers)


def warning(result: CompareResult) -> str | None:
    """One line saying which runs did not learn and why (``None`` when every run learned)."""
    failed = result.not_learned
    if not failed:
        return None
    first = failed[0]
    return (f"{len(failed)} of {len(result.runs)} runs did not learn "
            f"(alpha={first.alpha:g} seed {first.seed}: "
            f"{first.check['reasons'][0]}); their comparisons are {NOT_COMPARABLE!r}")


def noise_statement(result: CompareResult, scaling: str = "none") -> list[str]:
    """One plain sentence per compared alpha and metric (``scaling``: see ``compare.SCALINGS``)."""
    sentences = []
    for c in (c for c in result.comparisons if c["scaling"] == scaling and is_final(c)):
        name = METRICS[c["metric"]].label
        where = f"alpha={c['alpha']:g} vs alpha={c['baseline_alpha']:g}"
        diff = difference(c)
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


def _verdict(result: CompareResult, name: str, scaling: str, label: str) -> str:
    key = name + ("_ts" if scaling == "both" else "")
    best = best_row(result, key)
    if best is None and best_row(result, key, learned_only=False) is not None:
        return f"- **{label}**: no best alpha: every alpha measured has a run that did not learn."
    if best is None:
        return f"- **{label}**: not measured (no finite value)."
    base = result.alphas[0]
    shown = formatted(best[f"{key}_mean"], best[f"{key}_ci95"], key) + ("%" if in_percent(key) else "")
    head = f"- **{label}**: best at alpha {best['alpha']:g} ({shown})"
    if best["alpha"] != base:
        c = comparison(result, best["alpha"], name, scaling)
        if c is None:
            return f"{head}; alpha {base:g}, the baseline, was not measured the same way."
        return f"{head}, {difference(c)} against alpha {base:g}: {judgement(c)}."
    others = [c for a in result.alphas[1:] if (c := comparison(result, a, name, scaling)) is not None]
    if not others:
        return f"{head}; no other alpha to compare with."
    against = "; ".join(f"alpha {c['alpha']:g} {difference(c)} ({judgement(c)})" for c in others)
    return f"{head}, the baseline; against it: {against}."


def verdicts(result: CompareResult) -> list[str]:
    """One sentence per headline metric (:data:`HEADLINE`): the best alpha and how it compares."""
    return [_verdict(result, name, scaling, label) for name, scaling, label in HEADLINE]


def best_alphas(result: CompareResult) -> str:
    """The best alpha (by mean over seeds) of every metric, at T = 1 and after temperature scaling."""
    def best_of(keys: list[str]) -> str:
        shown = []
        for key in keys:
            best = best_row(result, key)
            alpha = "n/a" if best is None else format(best["alpha"], "g")
            shown.append(f"{METRICS[metric_of(key)].label} {alpha}")
        return ", ".join(shown)

    names = list(result.metric_names)
    scaled = [f"{n}_ts" for n in names if not METRICS[n].scale_invariant]
    return (f"Best alpha per metric (mean over seeds): at T = 1: {best_of(names)}; "
            f"after temperature scaling: {best_of(scaled)}.")


def _against_ts(result: CompareResult, alpha: float) -> str | None:
    base = result.alphas[0]
    row = {r["alpha"]: r for r in result.summary}
    found = {name: comparison(result, alpha, name, "baseline") for name in ("ece", "nll")}
    ece, nll = found["ece"], found["nll"]
    if ece is None or nll is None or alpha not in row or base not in row:
        return None
    parts = []
    for name, c in (("ece", ece), ("nll", nll)):
        mine = formatted(row[alpha][f"{name}_mean"], row[alpha][f"{name}_ci95"], name)
        theirs = formatted(row[base][f"{name}_ts_mean"], row[base][f"{name}_ts_ci95"], name)
        parts.append(f"{METRICS[name].label} {mine} against {theirs}, {difference(c)} ({judgement(c)})")
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
    temperature = formatted(row[base]["temperature_mean"], row[base]["temperature_ci95"], "temperature")
    return (f"- alpha {alpha:g} against temperature scaling at alpha {base:g} (T = {temperature}): "
            f"{'; '.join(parts)}. So {conclusion}.")


def temperature_answer(result: CompareResult) -> list[str]:
    """The plain-words answer per alpha: "alpha 0.1 against temperature scaling at alpha 0: ..."."""
    lines = [line for alpha in result.alphas[1:] if (line := _against_ts(result, alpha)) is not None]
    return lines or ["- Nothing to compare (one alpha, or no validation split to fit a temperature on)."]


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


def _warmup(config: Any) -> str:
    epochs = config.warmup_epochs
    plural = "s" * (epochs != 1)
    return f"; every alpha starts after {epochs} epoch{plural} of plain cross-entropy" if epochs else ""


def _trained(result: CompareResult) -> str:
    """What was trained: the model and its settings, or the records the numbers come from."""
    alphas = ", ".join(f"{a:g}" for a in result.alphas)
    config = result.config
    if config is None:
        return (f"{len(result.runs)} saved run records (listed under Provenance), alphas {alphas}, seeds "
                f"{', '.join(map(str, result.seeds))}. ")
    return (f"model `{result.settings.get('model')}`; alphas {alphas} ({config.convention} convention), "
            f"{len(result.seeds)} seeds each, {config.epochs} epochs, batches of {config.batch_size}, "
            f"lr {config.lr:g}, label noise {config.label_noise:g}{_augmentation(config)}{_warmup(config)}. ")


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
        *early_stopping_section(result),
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

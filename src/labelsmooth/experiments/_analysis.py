"""From run records to numbers: per-run metrics raw and temperature-scaled, the summary, the comparisons.

:func:`measure` turns one :class:`~._records.RunRecord` into a
:class:`~._results.RunResult`; :func:`summarize` derives the per-alpha summary
and the paired comparisons. ``compare``'s own runs and :func:`compare_runs`
go through the same two functions, so a record read back from disk gives the
same numbers as the run that wrote it.

Intervals. Alphas are paired by seed. With two or more shared seeds a
comparison carries a Student-t interval over seeds (``"interval": "seeds"``:
training randomness and the test sample's draw of runs, on one fixed test
split). With one shared seed it carries a paired bootstrap over test
examples (``"interval": "examples"``: the test sample only, not training
randomness): :data:`REPLICATES` resamples of the test ids, the same
resamples for both runs, from a generator seeded with :data:`BOOTSTRAP_SEED`.
Only metrics that are sums over examples have that form (:data:`ADDITIVE`);
the others get no interval there, and no interval means no noise verdict.

Early stopping. A record with early-stopped logits (the weights of the epoch
with the lowest validation NLL) is measured a second time with them, raw and
temperature-scaled (a temperature of their own, fitted on their validation
logits); the comparisons pair each alpha with the baseline under every entry
of :data:`CHECKPOINTS`: both final, both early-stopped, and the alpha at its
final epoch against the early-stopped baseline (whether smoothing beats the
free alternative).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth.experiments._determinism import deterministic
from labelsmooth.experiments._records import RecordSplit, RunRecord, read_run, record_name
from labelsmooth.experiments._results import CompareResult, EarlyStopped, RunResult
from labelsmooth.experiments._tokens import TokenSplit, grid_fit, token_scores, token_values
from labelsmooth.experiments.evaluate import (
    METRICS,
    Predictions,
    fit_scaling,
    learned_check,
    learned_verdict,
    scores,
)
from labelsmooth.experiments.stats import NOT_COMPARABLE, mean_ci
from labelsmooth.metrics import ECE_BINS
from labelsmooth.metrics._binned import _bin_index

__all__ = [
    "ADDITIVE", "BOOTSTRAP_SEED", "CHECKPOINTS", "MIN_VAL_ERRORS", "NO_INTERVAL", "REPLICATES", "SCALINGS",
    "ExampleStats",
    "attach_examples", "example_stats", "measure", "rows", "summarize", "summary_keys",
]

#: Paired comparisons by which side is temperature-scaled: ``"none"`` (both at T = 1), ``"both"``, and
#: ``"baseline"`` (the alpha at T = 1 against the baseline alpha after temperature scaling: Müller et al.'s
#: question, whether smoothing replaces the one-parameter fix).
SCALINGS = {"none": ("", ""), "both": ("_ts", "_ts"), "baseline": ("", "_ts")}
#: Paired comparisons by checkpoint, ``(the alpha's, the baseline's)``, with the key infix of each side:
#: both at their final epoch, both early-stopped, and the alpha at its final epoch against the
#: early-stopped baseline (does smoothing beat early stopping, which costs nothing?).
CHECKPOINTS = {("final", "final"): ("", ""), ("early_stopped", "early_stopped"): ("_es", "_es"),
               ("final", "early_stopped"): ("", "_es")}
REPLICATES = 2000
BOOTSTRAP_SEED = 0
#: Metrics that are a function of per-example sums, so a bootstrap over examples reweights them exactly.
ADDITIVE = ("accuracy", "nll", "ece", "brier")
#: A validation split with fewer misclassified rows than this cannot pin the temperature down: its NLL
#: keeps falling as T goes to 0 (with none) or rests on one or two rows.
MIN_VAL_ERRORS = 3
#: The verdict of a comparison that has no interval (ci off, or no per-example form with one seed).
NO_INTERVAL = "no interval: no noise verdict"
#: Replicates whose weights are drawn at once (memory: this many rows of N float64 weights).
_CHUNK = 100


def rows(split: RecordSplit | TokenSplit, ignore_index: int | None) -> tuple[Tensor, Tensor, np.ndarray]:
    """``(M, C)`` float64 logits, ``(M,)`` labels and each row's example (pixels of an image share one),
    ignored rows left out."""
    if isinstance(split, TokenSplit):
        raise v.fail("record", "logits (a token-level record has none)", "token statistics", error=TypeError)
    logits = torch.from_numpy(split.logits)
    labels = torch.from_numpy(split.labels)
    per_example = int(np.prod(split.labels.shape[1:], dtype=np.int64))
    example = np.repeat(np.arange(split.labels.shape[0]), per_example)
    if logits.dim() > 2:
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
        labels = labels.reshape(-1)
    if ignore_index is not None:
        keep = labels != ignore_index
        logits, labels, example = logits[keep], labels[keep], example[keep.numpy()]
    return logits.double(), labels, example


@dataclass(frozen=True)
class ExampleStats:
    """Per-example sums, ``(N, K)``: rows, correct rows, NLL, Brier, then per ECE bin the sum of
    ``correct - confidence``; ``raw`` at T = 1 and ``scaled`` after temperature scaling (or ``None``),
    and the same of the early-stopped weights (``es_raw``, ``es_scaled``)."""

    raw: np.ndarray
    scaled: np.ndarray | None
    es_raw: np.ndarray | None = None
    es_scaled: np.ndarray | None = None

    def side(self, suffix: str) -> np.ndarray | None:
        """The sums behind a value key's suffix: ``""``, ``"_ts"``, ``"_es"`` or ``"_es_ts"``."""
        return {"": self.raw, "_ts": self.scaled, "_es": self.es_raw, "_es_ts": self.es_scaled}[suffix]

    @staticmethod
    def values(sums: np.ndarray, name: str) -> np.ndarray:
        """``name``'s value from (weighted) sums over examples, ``(..., K)`` -> ``(...)``."""
        count = sums[..., 0]
        if name == "ece":
            return np.asarray(np.abs(sums[..., 4:]).sum(-1) / count)
        return np.asarray(sums[..., {"accuracy": 1, "nll": 2, "brier": 3}[name]] / count)


def _example_sums(p: Predictions, example: np.ndarray, examples: int) -> np.ndarray:
    probs = p.probs
    confidence, prediction = probs.max(1)
    correct = (prediction == p.targets).double()
    target_prob = probs.gather(1, p.targets[:, None])[:, 0]
    brier = probs.square().sum(1) - 2 * target_prob + 1
    nll = F.cross_entropy(p.logits, p.targets, reduction="none")
    return row_sums(confidence, correct, nll, brier, example, examples)


def row_sums(confidence: Tensor, correct: Tensor, nll: Tensor, brier: Tensor, example: np.ndarray,
             examples: int) -> np.ndarray:
    """:class:`ExampleStats`' sums from float64 ``(M,)`` rows, each of ``example`` in ``[0, examples)``."""
    # The ECE metric's own bins (Guo et al.'s rule: a confidence of 0 is in none).
    bins = _bin_index(confidence.clamp(max=1.0), ECE_BINS, "guo")[1]
    columns = torch.zeros(len(correct), 4 + ECE_BINS, dtype=torch.float64)
    columns[:, 0], columns[:, 1], columns[:, 2], columns[:, 3] = 1.0, correct, nll, brier
    inside = bins >= 0
    columns[inside, 4 + bins[inside]] = (correct - confidence)[inside]
    sums = np.zeros((examples, columns.shape[1]))
    np.add.at(sums, example, columns.numpy())
    return sums


def example_stats(p: Predictions, example: np.ndarray, examples: int,
                  temperature: float | None) -> ExampleStats:
    scaled = None if temperature is None else _example_sums(p.scaled(temperature), example, examples)
    return ExampleStats(_example_sums(p, example, examples), scaled)


def _temperature(val: Predictions | None, missing: str = "no validation split: no temperature scaling"
                 ) -> tuple[float | None, bool | None, str | None]:
    """The fitted temperature, whether it can be trusted, and why not (``missing``: without ``val``)."""
    if val is None or val.targets.numel() == 0:
        return None, None, missing
    temperature, at_bound = fit_scaling(val)
    if temperature is None:
        return None, None, "non-finite validation logits: no temperature scaling"
    return (temperature, *trust(temperature, at_bound, int((val.prediction != val.targets).sum())))


def trust(temperature: float, at_bound: bool, errors: int) -> tuple[bool, str | None]:
    """Whether a fitted temperature can be trusted, and why not: a fit at a bound of its search, or a
    validation split with fewer than :data:`MIN_VAL_ERRORS` misclassified rows."""
    if at_bound:
        return False, (f"T = {temperature:g} is a bound of the search: the validation NLL was still "
                       "falling there")
    if errors < MIN_VAL_ERRORS:
        return False, (f"the validation split has {errors} misclassified rows (fewer than "
                       f"{MIN_VAL_ERRORS}): too few to pin T down")
    return True, None


def measure(record: RunRecord) -> RunResult:
    """Every metric of one run at T = 1 and after temperature scaling, the bins, the learned check.

    One thread and deterministic kernels: a record gives the same bits in the
    worker that trained it and in any later :func:`compare_runs` (a parallel
    ``index_add_`` or sum adds in an order that depends on the thread count).
    """
    # Content checks off: the logits are finite (records are checked when read; a diverged run of compare's
    # own gets NaN metrics before any metric runs), so each metric need not re-read 50M probabilities.
    with deterministic(threads=1), v.content_checks(False):
        return _measure(record)


def _predictions(split: RecordSplit | TokenSplit | None, record: RunRecord) -> Predictions | None:
    if split is None:
        return None
    logits, labels, _ = rows(split, record.ignore_index)
    return Predictions(logits, labels, record.num_classes)


def _early_stopped(record: RunRecord, task: str) -> tuple[EarlyStopped, Predictions] | None:
    """The record's early-stopped predictions measured as :func:`measure` measures the final ones, with
    a temperature fitted on their own validation logits; ``None`` without them."""
    test = _predictions(record.test.early_stopped if isinstance(record.test, RecordSplit) else None, record)
    if test is None:
        return None
    val = _predictions(record.val.early_stopped if isinstance(record.val, RecordSplit) else None, record)
    temperature, ok, note = _temperature(val, "no early-stopped validation logits: no temperature scaling")
    metrics, _ = scores(test, task)
    scaled = {} if temperature is None else scores(test.scaled(temperature), task)[0]
    return EarlyStopped(record.best_epoch, metrics, scaled, temperature, ok, note), test


def _measure(record: RunRecord) -> RunResult:
    if isinstance(record.test, TokenSplit):
        return _measure_tokens(record, record.test)
    task = "segmentation" if record.test.logits.ndim > 2 else "classification"
    val = _predictions(record.val, record)
    temperature, ok, note = _temperature(val)
    del val
    logits, labels, example = rows(record.test, record.ignore_index)
    test = Predictions(logits, labels, record.num_classes)
    finite = bool(torch.isfinite(logits).all())  # a diverged run has no interval to give
    examples = record.test.labels.shape[0]
    check = learned_check(test, [h for h in record.history if "train_loss" in h])
    metrics, bins = scores(test, task)
    raw = _example_sums(test, example, examples) if finite else None
    scaled: dict[str, float] = {}
    scaled_bins, scaled_sums = None, None
    if temperature is not None:
        # One set of float64 probabilities at a time (each is N x C): the T = 1 ones go first.
        del test
        test = Predictions(logits / temperature, labels, record.num_classes)
        del logits
        scaled, scaled_bins = scores(test, task)
        scaled_sums = _example_sums(test, example, examples) if finite else None
    result = RunResult(record.alpha, record.seed, metrics, bins, list(record.history), check, scaled=scaled,
                       temperature=temperature, temperature_ok=ok, temperature_note=note,
                       scaled_bins=scaled_bins)
    del test  # the early-stopped predictions are the next N x C set
    _attach_early(result, record, task, raw, scaled_sums, example, examples)
    return result


def _attach_early(run: RunResult, record: RunRecord, task: str, raw: np.ndarray | None,
                  scaled: np.ndarray | None, example: np.ndarray, examples: int) -> None:
    """The early-stopped measurement, and the per-example sums of the final and early-stopped predictions
    (``raw`` ``None``: a diverged run, no interval to give)."""
    early = _early_stopped(record, task)
    run.early_stopped = None if early is None else early[0]
    if raw is None:
        return
    if early is None or not bool(torch.isfinite(early[1].logits).all()):
        run.examples = ExampleStats(raw, scaled)
        return
    stats = example_stats(early[1], example, examples, early[0].temperature)
    run.examples = ExampleStats(raw, scaled, stats.raw, stats.scaled)


def _measure_tokens(record: RunRecord, test: TokenSplit) -> RunResult:
    """:func:`measure` of a token-level record: per token, temperature scaling on the record's grid."""
    columns = [int(np.flatnonzero(test.temperatures == 1.0)[0])]
    temperature: float | None = None
    ok: bool | None = None
    note: str | None = "no validation split: no temperature scaling"
    val = record.val
    if isinstance(val, TokenSplit) and len(val.ids):
        temperature, column, at_bound = grid_fit(val)
        ok, note = trust(temperature, at_bound, int((~val.correct).sum()))
        columns.append(column)
    (metrics, bins), *scaled = (token_scores(test, column, ECE_BINS) for column in columns)
    correct = int(test.correct.sum())
    majority = float(np.bincount(test.labels).max()) / max(len(test.labels), 1)
    history = [h for h in record.history if "train_loss" in h]
    check = learned_verdict(correct, len(test.labels), majority, history)
    _, example = np.unique(test.examples, return_inverse=True)
    sums = [row_sums(*token_values(test, column), example, int(example.max(initial=-1)) + 1)
            for column in columns]
    result = RunResult(record.alpha, record.seed, metrics, bins, list(record.history), check,
                       scaled=scaled[0][0] if scaled else {}, temperature=temperature, temperature_ok=ok,
                       temperature_note=note)
    result.examples = ExampleStats(sums[0], sums[1] if len(sums) > 1 else None)
    return result


def _all_stats(run: RunResult, test: Predictions, es: Predictions | None, example: np.ndarray,
               examples: int) -> ExampleStats:
    """:class:`ExampleStats` of the final predictions and, where there are some, the early-stopped ones."""
    stats = example_stats(test, example, examples, run.temperature)
    if es is None or run.early_stopped is None or not bool(torch.isfinite(es.logits).all()):
        return stats
    early = example_stats(es, example, examples, run.early_stopped.temperature)
    return ExampleStats(stats.raw, stats.scaled, early.raw, early.scaled)


def attach_examples(runs: Sequence[RunResult], folder: Path) -> None:
    """Give the runs read back from a store their per-example sums, from their records in ``folder``."""
    for run in runs:
        path = folder / record_name(run.alpha, run.seed)
        finite = all(math.isfinite(value) for value in run.metrics.values())
        if run.examples is None and finite and path.is_file():
            record = read_run(path)
            logits, labels, example = rows(record.test, record.ignore_index)
            test = Predictions(logits, labels, record.num_classes)
            es = _predictions(record.test.early_stopped if isinstance(record.test, RecordSplit) else None,
                              record)
            run.examples = _all_stats(run, test, es, example, record.test.labels.shape[0])


def summary_keys(names: Sequence[str]) -> list[str]:
    """The per-run values the summary averages: each metric raw and scaled (``_ts``), the same early-stopped
    (``_es``, ``_es_ts``), then the temperatures and the early-stopped epoch."""
    return ([key for name in names for key in (name, f"{name}_ts", f"{name}_es", f"{name}_es_ts")]
            + ["temperature", "temperature_es", "best_epoch"])


def _summary_row(alpha: float, runs: list[RunResult], names: Sequence[str], ci: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"alpha": alpha, "n_seeds": len(runs),
                           "n_ts": sum(1 for r in runs if r.temperature_ok),
                           "n_es": sum(1 for r in runs if r.early_stopped is not None)}
    for key in summary_keys(names):
        values = [x for x in (r.value(key) for r in runs) if x is not None]
        mean, half = mean_ci(values) if values else (None, None)
        row[f"{key}_mean"], row[f"{key}_ci95"] = mean, half if ci else None
    return row


def _pairs(runs: list[RunResult], baseline: list[RunResult], name: str, own: str,
           other: str) -> list[tuple[RunResult, RunResult]]:
    """Runs paired by seed where both sides measured what the comparison needs (a trusted temperature
    fit for a scaled side)."""
    by_seed = {r.seed: r for r in baseline}
    return [(run, by_seed[run.seed]) for run in runs if run.seed in by_seed
            and run.value(name + own) is not None and by_seed[run.seed].value(name + other) is not None]


def _replicate_sums(side: np.ndarray) -> np.ndarray:
    """``(REPLICATES, K)``: the column sums of ``side`` under each resample of its rows.

    The resamples depend only on the row count and :data:`BOOTSTRAP_SEED`, so
    two runs of one comparison are resampled alike: the bootstrap is paired.
    """
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    n = side.shape[0]
    sums = []
    for start in range(0, REPLICATES, _CHUNK):
        draws = generator.integers(0, n, size=(min(_CHUNK, REPLICATES - start), n))
        offsets = draws + n * np.arange(draws.shape[0])[:, None]
        weights = np.bincount(offsets.ravel(), minlength=draws.size).reshape(draws.shape)
        sums.append(weights.astype(np.float64) @ side)
    return np.concatenate(sums)


class _Resampled(dict[int, np.ndarray]):
    """:func:`_replicate_sums` of each per-example array, computed once per :func:`summarize`."""

    def of(self, side: np.ndarray) -> np.ndarray:
        if id(side) not in self:
            self[id(side)] = _replicate_sums(side)
        return self[id(side)]


def _bootstrap(run: RunResult, base: RunResult, name: str, own: str, other: str,
               resampled: _Resampled) -> tuple[float, float] | None:
    """The 95% percentile interval of the paired difference, resampling test examples."""
    values = []
    for r, key in ((run, own), (base, other)):
        stats: ExampleStats | None = r.examples
        side = None if stats is None else stats.side(key)
        if side is None:
            return None
        values.append(ExampleStats.values(resampled.of(side), name))
    low, high = np.percentile(values[0] - values[1], [2.5, 97.5])
    return float(low), float(high)


def _interval(pairs: list[tuple[RunResult, RunResult]], name: str, own: str, other: str,
              ci: bool, resampled: _Resampled) -> tuple[float, tuple[float, float] | None, str | None]:
    """The mean paired difference, its interval and the interval's kind (``None``: none)."""
    differences = [run.value(name + own) - base.value(name + other)  # type: ignore[operator]
                   for run, base in pairs]
    mean, half = mean_ci(differences)
    if not ci:
        return mean, None, None
    if half is not None:
        return mean, (mean - half, mean + half), "seeds"
    interval = _bootstrap(*pairs[0], name, own, other, resampled) if name in ADDITIVE else None
    return mean, interval, None if interval is None else "examples"


def _comparison(alpha: float, base: float, name: str, scaling: str, checkpoints: tuple[str, str],
                runs: list[RunResult], baseline: list[RunResult], ci: bool,
                resampled: _Resampled) -> dict[str, Any] | None:
    (own_infix, other_infix), (own_scale, other_scale) = CHECKPOINTS[checkpoints], SCALINGS[scaling]
    own, other = own_infix + own_scale, other_infix + other_scale
    pairs = _pairs(runs, baseline, name, own, other)
    if not pairs:
        return None
    diff, interval, kind = _interval(pairs, name, own, other, ci, resampled)
    half = None if interval is None else (interval[1] - interval[0]) / 2
    row: dict[str, Any] = {
        "alpha": alpha, "baseline_alpha": base, "metric": name, "scaling": scaling,
        "checkpoint": checkpoints[1], "alpha_checkpoint": checkpoints[0],
        "difference_mean": diff, "difference_ci95": half,
        "difference_interval": None if interval is None else list(interval), "interval": kind,
        "n_pairs": len(pairs), "seeds": [run.seed for run, _ in pairs],
    }
    if not all(r.learned for pair in pairs for r in pair):
        return {**row, "inside_noise": None, "verdict": NOT_COMPARABLE}
    if interval is None:
        return {**row, "inside_noise": None, "verdict": NO_INTERVAL}
    noise = interval[0] <= 0.0 <= interval[1]
    better = (diff > 0) == METRICS[name].higher_is_better
    return {**row, "inside_noise": noise,
            "verdict": "inside the noise" if noise else ("better" if better else "worse")}


def summarize(result: CompareResult, ci: bool = True) -> None:
    """Fill ``result.summary`` (mean, interval per alpha) and ``result.comparisons`` (paired by seed).

    Every metric is summarized at T = 1 (``{metric}_mean``, ``{metric}_ci95``)
    and after temperature scaling (``{metric}_ts_mean``, ``{metric}_ts_ci95``)
    over the runs whose temperature fit can be trusted (``n_ts`` of them; the
    means are ``None`` when there is none), with the fitted temperature
    (``temperature_mean``, ``temperature_ci95``); the same of the early-stopped
    weights (``{metric}_es_mean``, ``{metric}_es_ts_mean``, ``temperature_es_mean``,
    their ``_ci95``, over the ``n_es`` runs that have them) and the early-stopped
    epoch (``best_epoch_mean``). Each alpha is compared with the first under
    every entry of :data:`CHECKPOINTS` and :data:`SCALINGS` (metrics that
    temperature scaling cannot change, accuracy and mean IoU, only at T = 1),
    over the seeds both finished (a partial comparison's summary, too, uses only the seeds every alpha
    finished); a row's ``checkpoint`` is the baseline's
    (``"final"`` or ``"early_stopped"``), its ``alpha_checkpoint`` the alpha's.
    A comparison that involves a run that did not learn
    gets the verdict :data:`NOT_COMPARABLE`; one without an interval,
    :data:`NO_INTERVAL`.
    """
    # A partial comparison ranks every alpha on the same seeds (those all of them finished), so that an
    # alpha with more finished seeds is not compared on a different sample of runs.
    shared = set(result.shared_seeds()) if result.partial else None
    summarized = {alpha: [r for r in result.runs_of(alpha) if shared is None or r.seed in shared]
                  for alpha in result.alphas}
    result.summary = [_summary_row(alpha, runs, result.metric_names, ci)
                      for alpha, runs in summarized.items() if runs]
    result.comparisons = []
    base = result.alphas[0]
    resampled = _Resampled()
    for alpha, checkpoints, scaling in itertools.product(result.alphas[1:], CHECKPOINTS, SCALINGS):
        for name in result.metric_names:
            if scaling != "none" and METRICS[name].scale_invariant:
                continue
            row = _comparison(alpha, base, name, scaling, checkpoints, result.runs_of(alpha),
                              result.runs_of(base), ci, resampled)
            if row is not None:
                result.comparisons.append(row)

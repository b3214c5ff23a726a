"""``compare_runs``: the verdict from saved run records, whatever trained them.

Records -> checks -> per-run metrics -> summary and comparisons -> report:
the analysis ``compare`` runs after its own training, fed by files that any
trainer writes (:mod:`._records`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from labelsmooth import _validation as v
from labelsmooth.experiments import provenance
from labelsmooth.experiments._analysis import measure, summarize
from labelsmooth.experiments._outdir import check_empty
from labelsmooth.experiments._records import RecordSplit, RunRecord, read_runs, reread
from labelsmooth.experiments._results import CompareResult
from labelsmooth.experiments._tokens import TASK, TokenSplit, token_note
from labelsmooth.experiments._warnings import probabilities, undertrained
from labelsmooth.experiments.provenance import call_text

__all__ = ["compare_runs"]

#: Why a comparison of records draws no penultimate-layer picture.
NO_PENULTIMATE = "No penultimate-layer picture: run records hold predictions, not activations."


def _alphas(records: Sequence[RunRecord]) -> list[float]:
    """Alpha 0 (or the smallest) first, as the baseline; then the others in increasing order."""
    found = sorted({r.alpha for r in records})
    base = 0.0 if 0.0 in found else found[0]
    return [base, *(a for a in found if a != base)]


def _task(record: RunRecord) -> str:
    if isinstance(record.test, TokenSplit):
        return TASK
    return "segmentation" if record.test.logits.ndim > 2 else "classification"


def _notes(records: Sequence[RunRecord], checked: list[str]) -> tuple[str, ...]:
    notes = [*checked, *(note for r in records for note in r.notes)]
    if isinstance(records[0].test, TokenSplit):
        notes.append(token_note(records[0].test))
    missing = [r for r in records if r.val is None]
    if missing:
        names = ", ".join(f"alpha {r.alpha:g} seed {r.seed}" for r in missing)
        notes.append(f"no validation split in {len(missing)} of {len(records)} records ({names}): "
                     "those runs get no temperature scaling")
    stopped = sum(1 for r in records if isinstance(r.test, RecordSplit) and r.test.es_logits is not None)
    if 0 < stopped < len(records):
        notes.append(f"early-stopped predictions (test_es_logits) in {stopped} of {len(records)} records: "
                     "the early-stopping comparisons pair only those runs")
    if not any(r.history for r in records):
        notes.append("no record has a training history: no curves, and the 'did not learn' rule uses "
                     "the majority-class test only")
    return tuple(dict.fromkeys([*notes, NO_PENULTIMATE]))


def _outputs_warning(record: RunRecord) -> str | None:
    """Records whose logits are probabilities (a softmax before saving): said once in the report."""
    logits = getattr(record.test, "logits", None)  # a token-level record holds statistics, not logits
    return None if logits is None else probabilities(torch.from_numpy(logits[:_SAMPLE_ROWS]))


#: Rows of a record that the probabilities check reads.
_SAMPLE_ROWS = 1000


def compare_runs(
    runs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    ci: bool = True,
    allow_different_settings: bool = False,
    overwrite: bool = False,
) -> CompareResult:
    """Compare saved runs: every metric raw and after temperature scaling, paired by seed.

    Reads one record per (alpha, seed) run (:func:`~._records.save_run`
    writes them; so can ``numpy.savez`` alone: see the README's "Run records"),
    checks that they are comparable, then measures each as ``compare`` measures
    its own runs (:func:`~._analysis.measure`) and derives the same summary,
    comparisons and report. The baseline is alpha 0 if present, else the
    smallest alpha. With one paired seed, a comparison's interval is a paired
    bootstrap over test examples (``"interval": "examples"``). Records with
    early-stopped logits (``test_es_logits``, ``val_es_logits``) are measured
    with those too, and compared at both checkpoints and final against the
    early-stopped baseline.

    Args:
        runs: a folder of ``.npz``/``.pt`` records, a glob, a file, or a list of these.
        out: if given, ``metrics.json``, the figures and ``report.md`` (whose
            provenance lists each record with its sha256); a folder that holds
            files needs ``overwrite``.
        ci: compute intervals (without them no comparison gets a noise verdict).
        allow_different_settings: records whose ``settings`` differ in more
            than alpha and seed are compared anyway, with a note in the report
            (else refused, naming the key).
        overwrite: replace what ``out`` holds.

    Returns:
        A :class:`~._results.CompareResult` (``config`` is ``None``).

    Raises:
        ValueError, TypeError: a record that cannot be read or compared, named
            with its file and key, before anything is computed or written.
    """
    call = call_text(locals(), _DEFAULTS).replace("compare(", "compare_runs(", 1)
    v.check_flag(ci, "ci")
    v.check_flag(overwrite, "overwrite")
    v.check_flag(allow_different_settings, "allow_different_settings")
    out_path = None if out is None else Path(out)
    if out_path is not None:
        check_empty(out_path, overwrite=overwrite)
    started = provenance.start(call, "cpu")
    records, checked = read_runs(runs, allow_different_settings=allow_different_settings)
    first = records[0]
    result = CompareResult(
        str(first.settings.get("dataset", "saved runs")),
        _task(first), first.num_classes,
        first.class_names or tuple(str(k) for k in range(first.num_classes)), _alphas(records),
        sorted({r.seed for r in records}), None, [], settings=first.compared_settings(),
        notes=_notes(records, checked), provenance=started, ci=ci,
        records=[{"path": r.source, "sha256": r.sha256, "alpha": r.alpha, "seed": r.seed} for r in records],
    )
    order = {alpha: k for k, alpha in enumerate(result.alphas)}
    records.sort(key=lambda r: (r.seed, order[r.alpha]), reverse=True)
    found: list[str | None] = []
    while records:  # one record's logits in memory at a time
        record = reread(records.pop())
        found.append(_outputs_warning(record))
        result.runs.append(measure(record))
        del record
    summarize(result, ci)
    found.append(undertrained(result.runs))
    result.warnings = tuple(dict.fromkeys(w for w in found if w is not None))
    result.provenance = provenance.finish(result.provenance)
    if out_path is not None:
        from labelsmooth.experiments.report import write_report

        write_report(result, out_path)
    return result


#: ``compare_runs``' defaults, for the Python call the report shows.
_DEFAULTS = {name: p.default for name, p in inspect.signature(compare_runs).parameters.items()}

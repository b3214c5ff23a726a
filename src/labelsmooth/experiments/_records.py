"""The run record: one (alpha, seed) run's saved predictions, a file any trainer can write with numpy alone.

Format 1 (the README's "Run records" section is the specification). One file per run:

* ``.npz``, read with ``numpy.load(allow_pickle=False)``, or ``.pt``, read with
  ``torch.load(weights_only=True)`` (tensors, strings, lists and dicts only);
* ``test_logits``: float, ``(N, C)`` or ``(N, C, d1, ...)`` (segmentation);
* ``test_labels``: int, ``(N,)`` or ``(N, d1, ...)``; ``test_ids``: optional,
  int or str, ``(N,)`` (default ``arange(N)``);
* ``val_logits``, ``val_labels``, ``val_ids``: optional; without them the run
  gets no temperature scaling and no early stopping;
* ``test_es_logits``, ``val_es_logits``: optional, the predictions of the
  weights of the epoch with the lowest validation NLL (early stopping), with
  the shapes of ``test_logits`` and ``val_logits`` and their rows (same labels
  and ids); ``val_es_logits`` fits their temperature;
* ``meta``: a JSON string (a dict in a ``.pt`` file is accepted too) with
  ``alpha`` and ``seed`` (required) and ``convention``, ``ignore_index``,
  ``class_names``, ``settings`` (the run's other settings), ``history``
  (per-epoch dicts) and ``best_epoch`` (the early-stopped epoch, from 1; only
  beside ``test_es_logits``) (optional).

Reading checks one file (:func:`read_run`); :func:`check_comparable` checks a
set of them against each other; both raise ``ValueError``/``TypeError`` naming
the file and the key. Rows are matched by id, so runs may store their test
examples in any order: :func:`read_runs` puts every test split in the order of
sorted ids.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from labelsmooth import _validation as v
from labelsmooth.experiments._files import atomic_file
from labelsmooth.experiments._tokens import KEYS as TOKEN_KEYS
from labelsmooth.experiments._tokens import TokenSplit, token_split

__all__ = [
    "FORMAT", "PREDICTIONS", "SUFFIXES", "RecordSplit", "RunRecord", "check_comparable", "find_runs",
    "read_run", "read_runs", "record_name", "reread", "save_run", "write_record",
]

FORMAT = 1
SUFFIXES = (".npz", ".pt")
#: The folder of ``compare``'s ``out`` that holds its runs' records.
PREDICTIONS = "predictions"
SPLITS = ("test", "val")
ARRAYS = ("logits", "labels", "ids")
#: The early-stopped predictions of a split: ``test_es_logits``, ``val_es_logits``.
ES_KEYS = tuple(f"{split}_es_logits" for split in SPLITS)
KEYS = (*(f"{split}_{array}" for split in SPLITS for array in ARRAYS), *ES_KEYS, "meta")
META_KEYS = ("alpha", "seed", "format", "convention", "ignore_index", "class_names", "settings", "history",
             "best_epoch")
#: What differs between runs by design; every other setting must agree.
VARIED = ("alpha", "seed")
FLOAT16_NOTE = ("16-bit logits are computed in float32; float16 rounds the gaps between the top logits "
                "(about 1e-3 relative), which moves NLL and calibration slightly")


@dataclass(frozen=True)
class RecordSplit:
    """One split: ``logits`` float32 ``(N, C, ...)``, ``labels`` int64 ``(N, ...)``, ``ids`` ``(N,)``, and
    ``es_logits``, the early-stopped weights' logits of the same rows (``None``: not recorded)."""

    logits: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    es_logits: np.ndarray | None = None

    def reordered(self, order: np.ndarray) -> RecordSplit:
        es = None if self.es_logits is None else self.es_logits[order]
        return RecordSplit(self.logits[order], self.labels[order], self.ids[order], es)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def early_stopped(self) -> RecordSplit | None:
        """The same rows with the early-stopped logits (``None`` without them)."""
        return None if self.es_logits is None else RecordSplit(self.es_logits, self.labels, self.ids)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The split's keys in a record file."""
        es = {} if self.es_logits is None else {f"{prefix}_es_logits": self.es_logits}
        return {f"{prefix}_logits": self.logits, f"{prefix}_labels": self.labels, f"{prefix}_ids": self.ids,
                **es}


Split = TypeVar("Split", RecordSplit, TokenSplit)


@dataclass(frozen=True)
class RunRecord:
    """A run's saved predictions and what it says about itself (:mod:`this module's format <._records>`)."""

    alpha: float
    seed: int
    #: :class:`RecordSplit`, or :class:`~._tokens.TokenSplit` for a token-level record.
    test: RecordSplit | TokenSplit
    val: RecordSplit | TokenSplit | None = None
    convention: str | None = None
    ignore_index: int | None = None
    class_names: tuple[str, ...] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Where it was read from (``None``: built in memory) and the file's sha256.
    source: str | None = None
    sha256: str | None = None
    #: What reading changed or noticed (16-bit logits, dropped duplicate ids).
    notes: tuple[str, ...] = ()
    #: The epoch (from 1) whose weights gave the splits' ``es_logits``: the lowest validation NLL.
    best_epoch: int | None = None

    @property
    def num_classes(self) -> int:
        return self.test.num_classes

    @property
    def name(self) -> str:
        return self.source if self.source is not None else f"run alpha={self.alpha:g} seed={self.seed}"

    def meta(self) -> dict[str, Any]:
        """The ``meta`` dict a file of this record holds."""
        meta: dict[str, Any] = {"format": FORMAT, "alpha": self.alpha, "seed": self.seed}
        optional = {"convention": self.convention, "ignore_index": self.ignore_index,
                    "class_names": None if self.class_names is None else list(self.class_names),
                    "settings": self.settings or None, "history": self.history or None,
                    "best_epoch": self.best_epoch}
        return meta | {key: value for key, value in optional.items() if value is not None}

    def compared_settings(self) -> dict[str, Any]:
        """What must agree between the runs of one comparison."""
        return {**self.settings, "convention": self.convention, "ignore_index": self.ignore_index,
                "num_classes": self.num_classes}


def _where(record: str, key: str) -> str:
    return f"{record}: {key}"


def _as_array(value: object, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return np.asarray(value, dtype=str)
    if isinstance(value, np.ndarray):
        return value
    raise v.fail(where, "an array or tensor", type(value).__name__, error=TypeError)


def _logits(value: object, where: str, notes: list[str]) -> np.ndarray:
    raw = value.dtype if isinstance(value, torch.Tensor) else None
    array = _as_array(value, where)
    if not np.issubdtype(array.dtype, np.floating):
        raise v.fail(where, "floating-point logits", str(array.dtype), error=TypeError)
    if array.ndim < 2:
        raise v.fail(where, "logits of shape (N, C) or (N, C, d1, ...)", tuple(array.shape))
    if array.dtype.itemsize < 4 or raw in (torch.float16, torch.bfloat16):
        notes.append(FLOAT16_NOTE)
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    if not finite.all():
        raise v.fail(where, "finite logits", f"a non-finite value in row {int(np.argmin(finite))}")
    return array


def _labels(value: object, logits: np.ndarray, where: str, ignore_index: int | None) -> np.ndarray:
    array = _as_array(value, where)
    if not np.issubdtype(array.dtype, np.integer):
        raise v.fail(where, "integer class labels", str(array.dtype), error=TypeError)
    expected = (logits.shape[0], *logits.shape[2:])
    if array.shape != expected:
        raise v.fail(where, f"shape {expected} (the logits' without the class dim)", tuple(array.shape))
    array = array.astype(np.int64)
    bad = (array < 0) | (array >= logits.shape[1])
    if ignore_index is not None:
        bad &= array != ignore_index
    if bad.any():
        allowed = f"[0, {logits.shape[1]})" + ("" if ignore_index is None else f" or {ignore_index}")
        raise v.fail(where, f"labels in {allowed} (ignore_index: meta's ignore_index)",
                     int(array[bad].flat[0]))
    return array


def _ids(value: object, rows: int, where: str) -> np.ndarray:
    if value is None:
        return np.arange(rows, dtype=np.int64)
    array = _as_array(value, where)
    if array.ndim != 1 or array.shape[0] != rows:
        raise v.fail(where, f"ids of shape ({rows},)", tuple(array.shape))
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if array.dtype.kind == "U":
        return array
    raise v.fail(where, "int or str ids", str(array.dtype), error=TypeError)


def _unique(split: Split, where: str, notes: list[str]) -> Split:
    """Keep the first row of each id (DDP samplers pad ranks with repeats) when the repeats' labels agree."""
    _, first, inverse = np.unique(split.ids, return_index=True, return_inverse=True)
    if len(first) == len(split.ids):
        return split
    flat = split.labels.reshape(len(split.ids), -1)
    disagree = (flat != flat[first[inverse.reshape(-1)]]).any(axis=1)
    if disagree.any():
        row = int(np.argmax(disagree))
        got = f"id {split.ids[row].item()!r} with two labels"
        raise v.fail(where, "repeated ids with the same labels", got)
    dropped = len(split.ids) - len(first)
    message = f"{where}: {dropped} repeated ids dropped (their first row kept)"
    warnings.warn(message, UserWarning, stacklevel=4)
    notes.append(message)
    return split.reordered(np.sort(first))


def _es_logits(arrays: dict[str, Any], prefix: str, logits: np.ndarray, record: str,
               notes: list[str]) -> np.ndarray | None:
    """The split's early-stopped logits, checked as its logits are and against their shape."""
    key = f"{prefix}_es_logits"
    if arrays.get(key) is None:
        return None
    es = _logits(arrays[key], _where(record, key), notes)
    if es.shape != logits.shape:
        raise v.fail(_where(record, key), f"shape {logits.shape} (that of {prefix}_logits)", es.shape)
    return es


def _split(arrays: dict[str, Any], prefix: str, record: str, ignore_index: int | None,
           notes: list[str]) -> RecordSplit | None:
    present = [f"{prefix}_{name}" for name in ARRAYS if arrays.get(f"{prefix}_{name}") is not None]
    if not present:
        if arrays.get(f"{prefix}_es_logits") is not None:
            raise v.fail(_where(record, f"{prefix}_es_logits"),
                         f"{prefix}_logits and {prefix}_labels beside it", None)
        return None
    for name in ("logits", "labels"):
        if f"{prefix}_{name}" not in present:
            raise v.fail(_where(record, f"{prefix}_{name}"), f"an array (given {', '.join(present)})", None)
    logits = _logits(arrays[f"{prefix}_logits"], _where(record, f"{prefix}_logits"), notes)
    labels = _labels(arrays[f"{prefix}_labels"], logits, _where(record, f"{prefix}_labels"), ignore_index)
    ids = _ids(arrays.get(f"{prefix}_ids"), logits.shape[0], _where(record, f"{prefix}_ids"))
    es = _es_logits(arrays, prefix, logits, record, notes)
    return _unique(RecordSplit(logits, labels, ids, es), _where(record, f"{prefix}_ids"), notes)


def _splits(arrays: dict[str, Any], record: str, ignore_index: int | None,
            notes: list[str]) -> tuple[RecordSplit | TokenSplit, RecordSplit | TokenSplit | None]:
    """The test and val splits: logits, or per-token statistics (:mod:`._tokens`), never both."""
    if any(key in TOKEN_KEYS for key in arrays):
        if any(key in KEYS[:-1] for key in arrays):
            raise v.fail(record, "either logits or token statistics", sorted(set(arrays) - {"meta"}))
        splits = [token_split(arrays, prefix, record) for prefix in SPLITS]
        test_tokens, val_tokens = (
            None if split is None else _unique(split, _where(record, f"{prefix}_tokens_ids"), notes)
            for split, prefix in zip(splits, SPLITS, strict=True))
        if test_tokens is None:
            raise v.fail(_where(record, "test_tokens_ids"), "an array (the test tokens are required)", None)
        return test_tokens, val_tokens
    test = _split(arrays, "test", record, ignore_index, notes)
    if test is None:
        raise v.fail(_where(record, "test_logits"), "an array (test logits and labels are required)", None)
    return test, _split(arrays, "val", record, ignore_index, notes)


def _optional_int(meta: dict[str, Any], key: str, record: str) -> int | None:
    value = meta.get(key)
    return None if value is None else v.check_int(value, _where(record, f"meta.{key}"))


def _meta(raw: object, record: str) -> dict[str, Any]:
    where = _where(record, "meta")
    if isinstance(raw, np.ndarray) and raw.shape == () and raw.dtype.kind in "US":
        raw = raw.item()
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise v.fail(where, "a JSON string", f"{error.msg} at character {error.pos}") from None
    if not isinstance(raw, dict):
        raise v.fail(where, "a JSON object with alpha and seed", type(raw).__name__, error=TypeError)
    unknown = sorted(set(raw) - set(META_KEYS))
    if unknown:
        raise v.fail(where, f"only the keys {', '.join(META_KEYS)}", unknown)
    for key in ("alpha", "seed"):
        if key not in raw:
            raise v.fail(_where(record, f"meta.{key}"), "a value (alpha and seed are required)", None)
    if raw.get("format", FORMAT) != FORMAT:
        raise v.fail(_where(record, "meta.format"), f"{FORMAT}", raw["format"])
    return raw


def _alpha(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise v.fail(where, "a finite number", value, error=TypeError)
    return float(value)


def _check_meta_types(meta: dict[str, Any], record: str) -> None:
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise v.fail(_where(record, "meta.class_names"), "a list of str", names, error=TypeError)
    if not isinstance(meta.get("settings") or {}, dict):
        raise v.fail(_where(record, "meta.settings"), "a dict", meta["settings"], error=TypeError)
    history = meta.get("history") or []
    if not (isinstance(history, list) and all(isinstance(entry, dict) for entry in history)):
        raise v.fail(_where(record, "meta.history"), "a list of per-epoch dicts", history, error=TypeError)


def _best_epoch(meta: dict[str, Any], test: RecordSplit | TokenSplit, val: RecordSplit | TokenSplit | None,
                record: str) -> int | None:
    """``meta.best_epoch``, and the early-stopped logits' pairing: val's only beside test's."""
    test_es = isinstance(test, RecordSplit) and test.es_logits is not None
    if isinstance(val, RecordSplit) and val.es_logits is not None and not test_es:
        raise v.fail(_where(record, "test_es_logits"), "an array beside val_es_logits", None)
    best = _optional_int(meta, "best_epoch", record)
    if best is None:
        return None
    if best < 1:
        raise v.fail(_where(record, "meta.best_epoch"), "an epoch >= 1", best)
    if not test_es:
        raise v.fail(_where(record, "test_es_logits"), "an array beside meta.best_epoch", None)
    return best


def build_record(arrays: dict[str, Any], record: str, *, source: str | None = None,
                 sha256: str | None = None) -> RunRecord:
    """Check a record's keys, meta and arrays; ``record`` names it in messages."""
    unknown = sorted(set(arrays) - set(KEYS) - set(TOKEN_KEYS))
    if unknown:
        raise v.fail(record, f"only the keys {', '.join(KEYS)} (or the token keys)", unknown)
    if "meta" not in arrays:
        raise v.fail(_where(record, "meta"), "a JSON string with alpha and seed", None)
    meta = _meta(arrays["meta"], record)
    _check_meta_types(meta, record)
    ignore_index = _optional_int(meta, "ignore_index", record)
    convention = meta.get("convention")
    if convention is not None:
        v.check_choice(convention, _where(record, "meta.convention"), v.CONVENTIONS)
    notes: list[str] = []
    test, val = _splits(arrays, record, ignore_index, notes)
    names = meta.get("class_names")
    if names is not None and len(names) != test.num_classes:
        raise v.fail(_where(record, "meta.class_names"), f"{test.num_classes} names", len(names))
    if val is not None and val.num_classes != test.num_classes:
        raise v.fail(_where(record, "val_logits"), f"{test.num_classes} classes", val.num_classes)
    return RunRecord(
        _alpha(meta["alpha"], _where(record, "meta.alpha")),
        v.check_int(meta["seed"], _where(record, "meta.seed")), test, val, convention, ignore_index,
        None if names is None else tuple(names), dict(meta.get("settings") or {}),
        list(meta.get("history") or []), source, sha256, tuple(dict.fromkeys(notes)),
        _best_epoch(meta, test, val, record),
    )


def _read_arrays(path: Path) -> dict[str, Any]:
    where = str(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        except ValueError as error:  # an object array needs pickle: refused
            raise v.fail(where, "an .npz of plain arrays (read without pickle)", str(error)) from None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses arbitrary objects: say so in one line
        raise v.fail(where, "a .pt file of tensors, strings and dicts", str(error).splitlines()[0]) from None
    if not isinstance(stored, dict):
        raise v.fail(where, "a dict of the record's keys", type(stored).__name__, error=TypeError)
    return stored


def read_run(path: str | os.PathLike[str]) -> RunRecord:
    """Read and check one record file (``.npz`` or ``.pt``)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise v.fail("runs", f"a {' or '.join(SUFFIXES)} file", str(path))
    if not path.is_file():
        raise v.fail("runs", "a record file that exists", str(path))
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return build_record(_read_arrays(path), str(path), source=str(path), sha256=digest.hexdigest())


def find_runs(runs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The record files of ``runs``: a folder (its ``.npz``/``.pt`` files), a glob, a file, or a list."""
    items = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    if not items:
        raise v.fail("runs", "a folder, a glob or a list of record files", runs)
    found: list[Path] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise v.fail("runs", "paths (str or os.PathLike)", type(item).__name__, error=TypeError)
        path = Path(item)
        if path.is_dir():
            matched = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        elif glob.has_magic(str(item)):
            matched = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).suffix in SUFFIXES)
        else:
            matched = [path]
        if not matched:
            raise v.fail("runs", "a folder or glob that holds .npz or .pt records", str(item))
        found.extend(matched)
    return list(dict.fromkeys(found))


def _first_difference(a: RecordSplit | TokenSplit, b: RecordSplit | TokenSplit, first: str,
                      other: str) -> None:
    if a.ids.dtype.kind != b.ids.dtype.kind or len(a.ids) != len(b.ids) or (a.ids != b.ids).any():
        only = np.setdiff1d(a.ids, b.ids)
        where, missing = (other, only) if len(only) else (first, np.setdiff1d(b.ids, a.ids))
        shown = missing[0].item() if len(missing) else "(a different count of rows)"
        raise v.fail(_where(where, "test_ids"), f"the same test ids as every run (missing here: {shown!r})",
                     f"{len(b.ids) if where == other else len(a.ids)} ids")
    rows = (a.labels.reshape(len(a.ids), -1) != b.labels.reshape(len(b.ids), -1)).any(axis=1)
    if rows.any():
        raise v.fail(_where(other, "test_labels"), f"the same labels as {first}",
                     f"a different label for id {a.ids[int(np.argmax(rows))].item()!r}")


def _settings_difference(records: Sequence[RunRecord]) -> tuple[str, str] | None:
    first = records[0].compared_settings()
    for record in records[1:]:
        other = record.compared_settings()
        for key in sorted(set(first) | set(other)):
            if key not in VARIED and first.get(key) != other.get(key):
                return record.name, (f"setting {key!r}: {first.get(key)!r} in {records[0].name}, "
                                     f"{other.get(key)!r} here")
    return None


def check_comparable(records: Sequence[RunRecord], *, allow_different_settings: bool = False) -> list[str]:
    """Check that ``records`` (test splits sorted by id) can be compared; return the notes for the report.

    Raises naming the file and the key: class counts that differ, two records
    of one (alpha, seed), fewer than two alphas, test ids or labels that
    differ, settings that differ in anything but alpha and seed (a note
    instead with ``allow_different_settings``).
    """
    seen: dict[tuple[float, int], str] = {}
    for record in records:
        if record.num_classes != records[0].num_classes:
            raise v.fail(_where(record.name, "test_logits"), f"{records[0].num_classes} classes "
                         f"(as {records[0].name})", record.num_classes)
        key = (record.alpha, record.seed)
        if key in seen:
            raise v.fail(_where(record.name, "meta"), f"one record per (alpha, seed) (also in {seen[key]})",
                         f"alpha={record.alpha:g} seed={record.seed}")
        seen[key] = record.name
    if len({record.alpha for record in records}) < 2:
        raise v.fail("runs", "records of at least two alphas", sorted({r.alpha for r in records}))
    for record in records[1:]:
        _first_difference(records[0].test, record.test, records[0].name, record.name)
    difference = _settings_difference(records)
    if difference is None:
        return []
    if not allow_different_settings:
        raise v.fail(_where(difference[0], "meta.settings"),
                     "the same settings as every run but alpha and seed (or allow_different_settings)",
                     difference[1])
    return [f"the runs' settings differ (allowed): {difference[1]}"]


def sorted_by_id(record: RunRecord) -> RunRecord:
    """``record`` with its test split in the order of sorted ids (how runs are paired row by row)."""
    return replace(record, test=record.test.reordered(np.argsort(record.test.ids, kind="stable")))


def _without_logits(record: RunRecord) -> RunRecord:
    """``record`` with each logits array replaced by a zero-byte view of its shape: what the checks
    between records need, without holding every run's logits at once."""
    def light(split: Any) -> Any:
        if not isinstance(split, RecordSplit):  # token statistics: a few numbers per token, kept
            return split
        return replace(split, logits=np.broadcast_to(np.float32(0), split.logits.shape))

    return replace(record, test=light(record.test), val=None if record.val is None else light(record.val))


def read_runs(runs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
              allow_different_settings: bool = False) -> tuple[list[RunRecord], list[str]]:
    """Read every record of ``runs`` and check them against each other; return them (their logits left
    out: :func:`reread` brings a record back whole) and the notes."""
    records = [_without_logits(sorted_by_id(read_run(path))) for path in find_runs(runs)]
    return records, check_comparable(records, allow_different_settings=allow_different_settings)


def reread(record: RunRecord) -> RunRecord:
    """The whole record that :func:`read_runs` checked, read again from its file (refused if it changed)."""
    if record.source is None:
        return record
    again = sorted_by_id(read_run(record.source))
    if again.sha256 != record.sha256:
        raise v.fail(record.source, f"the file that was checked (sha256 {record.sha256})",
                     f"a file changed since (sha256 {again.sha256})")
    return again


def _split_arrays(split: object, arg: str) -> dict[str, Any]:
    if isinstance(split, TokenSplit):
        return split.arrays(arg)
    if not isinstance(split, (tuple, list)) or len(split) not in (2, 3):
        raise v.fail(arg, "(logits, labels), (logits, labels, ids) or a TokenSplit", type(split).__name__,
                     error=TypeError)
    return {f"{arg}_{name}": value for name, value in zip(ARRAYS, split, strict=False)}


def save_run(path: str | os.PathLike[str], *, alpha: float, seed: int, test: Sequence[Any] | TokenSplit,
             val: Sequence[Any] | TokenSplit | None = None, settings: dict[str, Any] | None = None,
             convention: str | None = None, ignore_index: int | None = None,
             class_names: Sequence[str] | None = None, history: list[dict[str, Any]] | None = None,
             best_epoch: int | None = None, test_es_logits: Any = None, val_es_logits: Any = None) -> Path:
    """Write one run's record (``.npz`` or ``.pt`` by the suffix of ``path``), atomically.

    Args:
        path: the file to write; its folder is created.
        alpha, seed: the run's smoothing and seed.
        test, val: ``(logits, labels)`` or ``(logits, labels, ids)``, as
            tensors (any device, any float dtype; stored as float32) or arrays.
            Logits ``(N, C)`` or ``(N, C, d1, ...)``, labels ``(N,)`` or
            ``(N, d1, ...)``, ids ``(N,)`` int or str (default ``arange(N)``).
            Or a language model's tokens, a :class:`~._tokens.TokenSplit`
            (``labelsmooth.integrations.transformers.save_run`` builds them).
        settings: the run's other settings; the runs of one comparison must agree on them.
        convention, ignore_index, class_names, history: stored in ``meta``.
        best_epoch, test_es_logits, val_es_logits: early stopping: the epoch
            (from 1) with the lowest validation NLL, and its weights' logits on
            the rows of ``test`` and ``val`` (same shapes as their logits).

    Returns:
        The path written. The record is checked as :func:`read_run` checks it,
        before anything is written.
    """
    target = Path(path)
    if target.suffix not in SUFFIXES:
        raise v.fail("path", f"a file name ending in {' or '.join(SUFFIXES)}", str(path))
    meta = {"alpha": alpha, "seed": seed, "convention": convention, "ignore_index": ignore_index,
            "class_names": None if class_names is None else list(class_names), "settings": settings,
            "history": history, "best_epoch": best_epoch}
    arrays: dict[str, Any] = {"meta": {key: value for key, value in meta.items() if value is not None}}
    for prefix, split in (("test", test), ("val", val)):
        if split is not None:
            arrays |= _split_arrays(split, prefix)
    arrays |= {key: value for key, value in zip(ES_KEYS, (test_es_logits, val_es_logits), strict=True)
               if value is not None}
    record = build_record(arrays, "save_run")
    write_record(record, target)
    return target


def record_name(alpha: float, seed: int) -> str:
    """The file name of a run's record in ``compare``'s ``predictions/`` folder."""
    return f"alpha{alpha:g}_seed{seed}.npz"


def write_record(record: RunRecord, path: Path) -> None:
    """Write ``record`` to ``path`` (``.npz`` or ``.pt``) atomically."""
    # default=str: a setting that is not a JSON value (a callable's name) is kept as its text.
    arrays: dict[str, Any] = {"meta": json.dumps(record.meta(), default=str)}
    for prefix, split in (("test", record.test), ("val", record.val)):
        if split is not None:
            arrays |= split.arrays(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as stream:
        if path.suffix == ".npz":
            np.savez(stream, **arrays)
        else:
            # weights_only loading takes tensors, str and lists: str ids go as a list.
            torch.save({key: value.tolist() if isinstance(value, np.ndarray) and value.dtype.kind == "U"
                        else torch.from_numpy(value) if isinstance(value, np.ndarray) else value
                        for key, value in arrays.items()}, stream)

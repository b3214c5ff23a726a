"""A CSV or Parquet table as a classification data set, cleaned so that garbage cannot pass as data.

The rules, in order:

* the label column must hold class labels: a column of non-integer numbers,
  or one with a distinct value in most rows, "looks continuous" and is refused;
* a text column is *numeric with bad cells* when at least half of its cells
  parse as numbers: the first cell that does not is an error naming the column
  and the row;
* a text column with more than :data:`MAX_CATEGORIES` distinct values, or
  with a distinct value in more than half the rows (an id), is dropped;
* the other text columns are one-hot encoded with the categories of the
  training split only (a category seen only in the test split gives all zeros);
* a column that is constant on the training split carries nothing to learn
  from and is dropped, so standardization (with the training split's mean and
  standard deviation) never divides by zero.

Every dropped column is listed in ``DataSet.notes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelsmooth.experiments.data import TEST_FRACTION, DataSet, Split, fail, shorten, stratified_indices

__all__ = ["MAX_CATEGORIES", "NUMERIC_SHARE", "load_table"]

#: Text columns with more distinct values than this are dropped.
MAX_CATEGORIES = 50
#: A text column is taken for numbers when at least this share of its cells parse as numbers.
NUMERIC_SHARE = 0.5


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except ImportError as error:
        raise fail("dataset", "a readable table (is pyarrow installed for parquet?)", str(error)) from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        got = f"{path} ({error})".splitlines()[0]
        raise fail("dataset", f"a readable {path.suffix} table", got) from None


def _labels(frame: Any, label_column: str, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    if label_column not in frame.columns:
        columns = shorten([str(c) for c in frame.columns])
        raise fail("label_column", f"a column of {path.name} (columns: {columns})", label_column)
    column = frame[label_column]
    if column.isna().any():
        raise fail(label_column, "a class label in every row",
                   f"a missing label in row {int(column.isna().argmax()) + 1}")
    distinct = column.nunique()
    fractional = pd.api.types.is_float_dtype(column) and not np.all(np.mod(column.to_numpy(), 1) == 0)
    if fractional or (distinct > MAX_CATEGORIES and distinct > len(column) / 2):
        raise fail(label_column, "class labels", f"{distinct} distinct values in {len(column)} rows, "
                   f"e.g. {shorten(column.head(3).tolist())}: looks continuous")
    labels, names = pd.factorize(column, sort=True)
    if len(names) < 2:
        raise fail(label_column, "at least two classes", len(names))
    return labels.astype(np.int64), tuple(str(n) for n in names)


def _check_numeric(name: str, column: Any) -> bool:
    """Whether a text column holds numbers; raise on the first bad cell of an otherwise numeric one."""
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce")
    present = column.notna()
    bad = present & parsed.isna()
    if not bad.any():
        return True
    if (present & ~bad).sum() < NUMERIC_SHARE * present.sum():
        return False
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise fail(f"column {name!r}, row {row + 1} (counting data rows from 1)",
               "a number, as in the column's other cells", column.iloc[row])


def _features(frame: Any, train_rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Numeric and one-hot columns (categories from ``train_rows``) and a note per dropped column."""
    import pandas as pd

    parts, notes = [], []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            parts.append((str(name), column.to_numpy(dtype=np.float64)))
            continue
        if _check_numeric(str(name), column):
            parts.append((str(name), pd.to_numeric(column).to_numpy(dtype=np.float64)))
            continue
        text = column.astype("string")
        distinct = text.nunique()
        if distinct > MAX_CATEGORIES or distinct > len(text) / 2:
            notes.append(f"dropped text column {name!r} ({distinct} distinct values in {len(text)} rows: "
                         "an id or free text)")
            continue
        values = text.to_numpy(dtype=object)
        for category in sorted({v for v in values[train_rows] if isinstance(v, str)}):
            parts.append((f"{name}={category}", (values == category).astype(np.float64)))
    if not parts:
        return np.empty((len(frame), 0)), notes
    return np.stack([p[1] for p in parts], axis=1), [p[0] for p in parts] + notes


def load_table(path: Path, label_column: str = "label") -> DataSet:
    """A CSV or Parquet table: ``label_column`` is the class, the other columns are cleaned features.

    See the module docstring for the cleaning rules; the split is stratified
    70/30 with a fixed seed, and the features are standardized with the
    training split's mean and standard deviation.
    """
    frame = _read_table(path)
    labels, names = _labels(frame, label_column, path)
    counts = np.bincount(labels)
    if (counts < 2).any():
        raise fail("dataset", "at least two examples of every class (for a stratified split)",
                   f"class sizes {shorten(counts.tolist())}")
    train_rows, test_rows = stratified_indices(labels, TEST_FRACTION, stratify=True)
    x, columns = _features(frame.drop(columns=[label_column]), np.sort(train_rows))
    width = x.shape[1]
    notes = columns[width:]
    if not np.isfinite(x).all():
        raise fail("dataset", "a table without missing values", str(path))
    constant = np.ptp(x[train_rows], axis=0) == 0 if width else np.zeros(0, dtype=bool)
    notes += [f"dropped column {columns[j]!r} (constant on the training split)"
              for j in np.flatnonzero(constant)]
    x = x[:, ~constant]
    if x.shape[1] == 0:
        raise fail("dataset", "a table with at least one usable feature column besides the label",
                   f"{path} ({'; '.join(notes) or 'no other column'})")
    mean, std = x[train_rows].mean(0), x[train_rows].std(0)
    x = ((x - mean) / std).astype(np.float32)
    return DataSet(
        path.stem, "classification", "table",
        Split(torch.from_numpy(x[train_rows]), torch.from_numpy(labels[train_rows])),
        Split(torch.from_numpy(x[test_rows]), torch.from_numpy(labels[test_rows])),
        len(names), names, notes=tuple(notes),
    )

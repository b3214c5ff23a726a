"""Which loader reads a ``dataset`` argument: a built-in name, a folder of images or a table."""

from __future__ import annotations

import os
from pathlib import Path

from labelsmooth.experiments.data import (
    IMAGE_SIZE,
    DataSet,
    fail,
    load_digits,
    load_image_folder,
    load_mnist1d,
    load_shapes,
)
from labelsmooth.experiments.tables import load_table

__all__ = ["BUILTIN", "TABLE_SUFFIXES", "load_dataset"]

BUILTIN = {"digits": load_digits, "shapes": load_shapes, "mnist1d": load_mnist1d}
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def load_dataset(dataset: str | os.PathLike[str], *, label_column: str = "label",
                 image_size: int = IMAGE_SIZE) -> DataSet:
    """``"digits"``, ``"shapes"``, ``"mnist1d"``, a folder of class subfolders, or a ``.csv``/``.parquet``
    table."""
    if isinstance(dataset, str) and dataset in BUILTIN:
        return BUILTIN[dataset]()
    path = Path(dataset)
    expected = "'digits', 'shapes', 'mnist1d', a folder of class subfolders or a .csv/.parquet file"
    if not path.exists():
        raise fail("dataset", f"{expected} that exists", str(dataset))
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise fail("dataset", "a path this user can read", str(dataset))
    if path.is_dir():
        return load_image_folder(path, image_size=image_size)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, label_column)
    raise fail("dataset", expected, str(dataset))

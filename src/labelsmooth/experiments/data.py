"""The data sets ``compare`` trains on: two built in, two read from the user's disk.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (no download), a
  fixed stratified 70/30 split.
* ``shapes``: generated segmentation images (discs, squares and triangles on
  noise), one class per pixel, an ignore label on every shape's border.
* a folder of images in class subfolders (discovered with
  ``sklearn.datasets.load_files``, decoded with Pillow, resized to 32x32 RGB);
* a ``.csv`` or ``.parquet`` table with a label column (pandas).

The split never depends on the run's seed, so every run sees the same test set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from labelsmooth import _validation as v

BUILTIN = ("digits", "shapes")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SPLIT_SEED = 0
TEST_FRACTION = 0.3
IMAGE_SIZE = 32
#: Files with other suffixes in the class subfolders (notes, .DS_Store) are skipped.
IMAGE_SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
SHAPES_IGNORE = 255

Task = Literal["classification", "segmentation"]


class DataError(ValueError):
    """Bad data input; the message names what is wrong (the CLI prints it on one line)."""


@dataclass(frozen=True)
class Split:
    inputs: Tensor
    targets: Tensor


@dataclass(frozen=True)
class DataSet:
    """A train and a test split and what a model needs to know about them.

    ``kind`` is ``"image"`` (``(N, C, H, W)`` inputs) or ``"table"`` (``(N, D)``).
    """

    name: str
    task: Task
    kind: Literal["image", "table"]
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int | None = None


def _fail(arg: str, expected: str, got: object) -> DataError:
    return DataError(str(v.fail(arg, expected, got)))


def _split(x: np.ndarray, y: np.ndarray, *, stratify: bool = True) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split

    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y if stratify else None
        )
    except ValueError:
        raise _fail("dataset", "at least two examples of every class (for a stratified split)",
                    f"class sizes {np.bincount(y).tolist()}") from None
    return (
        Split(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train).long()),
        Split(torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test).long()),
    )


def load_digits() -> DataSet:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split 70/30."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    train, test = _split(images, bunch.target.astype(np.int64))
    return DataSet("digits", "classification", "image", train, test, 10, tuple(str(d) for d in range(10)))


def _shape_masks(rng: np.random.Generator, size: int) -> list[tuple[int, np.ndarray]]:
    yy, xx = np.mgrid[0:size, 0:size]
    shapes: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, 4))
        cy, cx = rng.integers(6, size - 6, size=2)
        r = int(rng.integers(4, 8))
        if label == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif label == 2:
            mask = (np.abs(yy - cy) <= r - 1) & (np.abs(xx - cx) <= r - 1)
        else:
            mask = (yy - cy >= -r) & (yy - cy <= r) & (np.abs(xx - cx) <= (yy - cy + r) / 2)
        shapes.append((label, mask))
    return shapes


def generate_shapes(n: int, *, size: int = 32, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy grayscale images with 1 to 3 shapes each and their label maps.

    Classes: 0 background, 1 disc, 2 square, 3 triangle. Pixels on a border
    between two classes get the ignore label 255.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    labels = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        image = rng.normal(0.0, 0.35, size=(size, size))
        for label, mask in _shape_masks(rng, size):
            image[mask] += rng.uniform(0.6, 1.2)
            labels[i][mask] = label
        padded = np.pad(labels[i], 1, mode="edge")
        border = np.zeros((size, size), dtype=bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            border |= padded[dy : dy + size, dx : dx + size] != labels[i]
        labels[i][border] = SHAPES_IGNORE
        images[i, 0] = image
    return images, labels


def load_shapes(n_train: int = 256, n_test: int = 96) -> DataSet:
    """The generated segmentation set; train and test come from different generator seeds."""
    x_train, y_train = generate_shapes(n_train, seed=1234)
    x_test, y_test = generate_shapes(n_test, seed=4321)
    return DataSet(
        "shapes", "segmentation", "image",
        Split(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        Split(torch.from_numpy(x_test), torch.from_numpy(y_test)),
        4, ("background", "disc", "square", "triangle"), SHAPES_IGNORE,
    )


def _any_case(suffixes: list[str]) -> list[str]:
    # load_files compares suffixes exactly; photos often end in .JPG.
    return sorted({case for s in suffixes for case in (s, s.upper(), s.capitalize())})


def load_image_folder(path: Path) -> DataSet:
    """Images in class subfolders (``path/<class>/<image>``), as 32x32 RGB in [0, 1].

    Only files with an image suffix (:data:`IMAGE_SUFFIXES`, any case) count.
    """
    from PIL import Image, UnidentifiedImageError
    from sklearn.datasets import load_files

    suffixes = _any_case(IMAGE_SUFFIXES)
    bunch = load_files(str(path), load_content=False, shuffle=False, allowed_extensions=suffixes)
    names = tuple(str(n) for n in bunch.target_names)
    if len(names) < 2 or len(bunch.filenames) == 0:
        raise _fail("dataset", "a folder with at least two class subfolders of images",
                    f"{path} with {len(names)} class subfolder(s)")
    images = np.empty((len(bunch.filenames), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, filename in enumerate(bunch.filenames):
        try:
            with Image.open(filename) as image:
                rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError) as error:
            raise _fail("dataset", "readable image files in the class subfolders",
                        f"{filename} ({type(error).__name__})") from None
        images[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    train, test = _split(images, np.asarray(bunch.target, dtype=np.int64))
    return DataSet(path.name or str(path), "classification", "image", train, test, len(names), names)


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except ImportError as error:
        raise _fail("dataset", "a readable table (is pyarrow installed for parquet?)", str(error)) from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        got = f"{path} ({error})".splitlines()[0]
        raise _fail("dataset", f"a readable {path.suffix} table", got) from None


def load_table(path: Path, label_column: str = "label") -> DataSet:
    """A CSV or Parquet table: ``label_column`` is the class, every other column a feature.

    Text features are one-hot encoded; features are standardized with the
    training split's mean and standard deviation.
    """
    import pandas as pd

    frame = _read_table(path)
    if label_column not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise _fail("label_column", f"a column of {path.name} (columns: {columns})", label_column)
    labels, names = pd.factorize(frame[label_column], sort=True)
    features = pd.get_dummies(frame.drop(columns=[label_column]), dtype=np.float32)
    if features.shape[1] == 0:
        raise _fail("dataset", "a table with at least one feature column besides the label", str(path))
    if len(names) < 2:
        raise _fail(label_column, "at least two classes", len(names))
    x = features.to_numpy(dtype=np.float32)
    if (labels < 0).any() or not np.isfinite(x).all():
        raise _fail("dataset", "a table without missing values", str(path))
    train, test = _split(x, labels.astype(np.int64))
    mean, std = train.inputs.mean(0), train.inputs.std(0).clamp(min=1e-6)
    return DataSet(
        path.stem, "classification", "table",
        Split((train.inputs - mean) / std, train.targets), Split((test.inputs - mean) / std, test.targets),
        len(names), tuple(str(n) for n in names),
    )


def load_dataset(dataset: str | os.PathLike[str], *, label_column: str = "label") -> DataSet:
    """``"digits"``, ``"shapes"``, a folder of class subfolders, or a ``.csv``/``.parquet`` table."""
    if isinstance(dataset, str) and dataset in BUILTIN:
        return load_digits() if dataset == "digits" else load_shapes()
    path = Path(dataset)
    expected = "'digits', 'shapes', a folder of class subfolders or a .csv/.parquet file"
    if not path.exists():
        raise _fail("dataset", f"{expected} that exists", str(dataset))
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise _fail("dataset", "a path this user can read", str(dataset))
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return load_table(path, label_column)
    raise _fail("dataset", expected, str(dataset))


def flip_labels(targets: Tensor, fraction: float, num_classes: int, *, generator: torch.Generator,
                ignore_index: int | None = None) -> Tensor:
    """A copy of ``targets`` where a ``fraction`` of the (non-ignored) labels moved to another class."""
    flat = targets.reshape(-1).clone()
    if fraction == 0.0:
        return flat.reshape(targets.shape)
    valid = torch.arange(flat.numel())
    if ignore_index is not None:
        valid = valid[flat != ignore_index]
    chosen = valid[torch.randperm(valid.numel(), generator=generator)[: round(fraction * valid.numel())]]
    shift = torch.randint(1, num_classes, (chosen.numel(),), generator=generator)
    flat[chosen] = (flat[chosen] + shift) % num_classes
    return flat.reshape(targets.shape)

"""The data sets ``compare`` trains on: three built in, two read from the user's disk, or the user's own.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (no download), a
  fixed stratified 70/30 split.
* ``shapes``: generated segmentation images (discs, squares and triangles on
  noise), one class per pixel, an ignore label on every shape's border.
* ``mnist1d``: Greydanus's MNIST-1D, built procedurally by the ``mnist1d``
  package (no download): 4000 train / 1000 test signals of length 40.
* a folder of images in class subfolders (discovered with
  ``sklearn.datasets.load_files``, decoded with Pillow, resized to
  ``image_size`` square RGB);
* a ``.csv`` or ``.parquet`` table with a label column (:mod:`.tables`; :mod:`.sources` picks the loader);
* the user's own torch Datasets of ``(input, label)`` pairs (:func:`from_datasets`).

Every split is a map-style :class:`torch.utils.data.Dataset`; the built-in
ones hold tensors (:class:`Split`) and are batched by indexing. The
validation split, when not given, is a fixed 10% of the training split. No
split depends on the run's seed, so every run sees the same data.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset, default_collate

from labelsmooth import _validation as v
from labelsmooth.experiments._config import DEFAULTS

__all__ = [
    "IMAGE_SIZE",
    "SPLIT_SEED",
    "STRAY_LABEL",
    "TEST_FRACTION",
    "VAL_FRACTION",
    "DataError",
    "DataSet",
    "Split",
    "fail",
    "flip_labels",
    "from_datasets",
    "generate_shapes",
    "in_order",
    "load_digits",
    "load_image_folder",
    "load_mnist1d",
    "load_shapes",
    "prepare",
    "read_split",
    "shorten",
    "size",
    "stratified_indices",
    "take",
    "tensor_bytes"
]

SPLIT_SEED = 0
TEST_FRACTION = 0.3
VAL_FRACTION: float = DEFAULTS["val_fraction"]
IMAGE_SIZE: int = DEFAULTS["image_size"]
#: Files with other suffixes in the class subfolders (notes, .DS_Store) are skipped.
IMAGE_SUFFIXES = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]
SHAPES_IGNORE = 255
#: Class counts shown in a message before it is cut.
SHOWN = 10

Task = Literal["classification", "segmentation"]
Kind = Literal["image", "signal", "table", "other"]


class DataError(ValueError):
    """Bad data input; the message names what is wrong (the CLI prints it on one line)."""


def fail(arg: str, expected: str, got: object) -> DataError:
    return DataError(str(v.fail(arg, expected, got)))


def shorten(values: list[Any]) -> str:
    """``values`` as a list, cut after :data:`SHOWN` entries (a message stays one short line).

    Example:
        >>> shorten(list(range(12)))
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (12 in all)]'
    """
    if len(values) <= SHOWN:
        return str(values)
    return "[" + ", ".join(map(str, values[:SHOWN])) + f", ... ({len(values)} in all)]"


@dataclass(frozen=True)
class Split(Dataset[tuple[Tensor, Tensor]]):
    """A split held as two tensors: ``inputs (N, ...)`` and ``targets (N,)`` or ``(N, H, W)``."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]


def tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of ``tensor`` (any dtype, bfloat16 included), for hashing."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def size(dataset: Dataset[Any]) -> int:
    """``len(dataset)``: every split here is map-style (:func:`read_split` checks it has a length)."""
    return len(dataset)  # type: ignore[arg-type]


def take(dataset: Dataset[Any], index: Tensor) -> tuple[Tensor, Tensor]:
    """The batch ``(inputs, targets)`` of the items at ``index`` (a 1-D int64 tensor)."""
    if isinstance(dataset, Split):
        return dataset.inputs[index], dataset.targets[index]
    inputs, targets = default_collate([dataset[i] for i in index.tolist()])
    return torch.as_tensor(inputs), torch.as_tensor(targets)


def in_order(dataset: Dataset[Any], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Every item of ``dataset`` in order, as ``(inputs, targets)`` batches of ``batch_size``."""
    n = size(dataset)
    for start in range(0, n, batch_size):
        yield take(dataset, torch.arange(start, min(start + batch_size, n)))


@dataclass(frozen=True)
class DataSet:
    """A train, an optional validation and a test split, and what a model needs to know about them.

    ``kind`` is ``"image"`` (``(C, H, W)`` inputs), ``"signal"`` (``(C, L)``),
    ``"table"`` (``(D,)``) or ``"other"``. ``labels`` holds every split's labels, read once
    (``{"train": ..., "val": ..., "test": ...}``); ``fingerprint`` is a hash of
    every input and label, so a resumed comparison can tell the data changed.
    ``notes`` says what loading changed (dropped columns, for instance).
    ``user`` marks the user's own Datasets (:func:`from_datasets`).
    """

    name: str
    task: Task
    kind: Kind
    train: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int | None = None
    val: Dataset[Any] | None = None
    labels: dict[str, Tensor] = field(default_factory=dict, repr=False)
    fingerprint: str = ""
    notes: tuple[str, ...] = ()
    user: bool = False


def stratified_indices(labels: np.ndarray, fraction: float, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        kept, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED,
                                      stratify=labels if stratify else None)
    except ValueError:
        if not stratify:
            raise
        # Too few examples of some class to stratify (a tiny validation split): a plain random split.
        kept, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED)
    return np.asarray(kept), np.asarray(held)


def _split(x: np.ndarray, y: np.ndarray) -> tuple[Split, Split]:
    counts = np.bincount(y)
    if (counts[counts > 0] < 2).any():
        raise fail("dataset", "at least two examples of every class (for a stratified split)",
                    f"class sizes {shorten(counts.tolist())}")
    kept, held = stratified_indices(y, TEST_FRACTION, stratify=True)
    return (
        Split(torch.from_numpy(np.ascontiguousarray(x[kept])), torch.from_numpy(y[kept]).long()),
        Split(torch.from_numpy(np.ascontiguousarray(x[held])), torch.from_numpy(y[held]).long()),
    )


def load_digits() -> DataSet:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split 70/30."""
    from sklearn import datasets

    bunch = datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    train, test = _split(images, bunch.target.astype(np.int64))
    return DataSet("digits", "classification", "image", train, test, 10, tuple(str(d) for d in range(10)))


def load_mnist1d() -> DataSet:
    """MNIST-1D (Greydanus, 2020) with the package's default arguments, as ``(N, 1, 40)`` signals.

    ``mnist1d.data.make_dataset`` builds it from ten hand-drawn templates
    (shifted, scaled, sheared, padded and noised), so nothing is downloaded;
    its 5000 samples split 4000 train / 1000 test. It seeds numpy's and
    Python's global generators; both are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ModuleNotFoundError:
        raise fail("dataset", 'the mnist1d package for "mnist1d" (pip install "labelsmooth[mnist1d]")',
                   "mnist1d") from None
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        built = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    def split(x: str, y: str) -> Split:
        inputs = torch.from_numpy(np.asarray(built[x], dtype=np.float32)[:, None].copy())
        return Split(inputs, torch.from_numpy(np.asarray(built[y], dtype=np.int64)))

    return DataSet("mnist1d", "classification", "signal", split("x", "y"), split("x_test", "y_test"), 10,
                   tuple(str(d) for d in range(10)))


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


def _decode_images(filenames: list[str], image_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    images = np.empty((len(filenames), 3, image_size, image_size), dtype=np.float32)
    for i, filename in enumerate(filenames):
        try:
            with Image.open(filename) as image:
                rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError) as error:
            raise fail("dataset", "readable image files in the class subfolders",
                       f"{filename} ({type(error).__name__})") from None
        images[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return images


def load_image_folder(path: Path, *, image_size: int = IMAGE_SIZE) -> DataSet:
    """Images in class subfolders (``path/<class>/<image>``), as ``image_size`` square RGB in [0, 1].

    Only files with an image suffix (:data:`IMAGE_SUFFIXES`, any case) count,
    and only subfolders that hold at least one of them are classes.
    """
    from sklearn.datasets import load_files

    bunch = load_files(str(path), load_content=False, shuffle=False,
                       allowed_extensions=_any_case(IMAGE_SUFFIXES))
    used = np.unique(np.asarray(bunch.target, dtype=np.int64))
    if len(used) < 2:
        raise fail("dataset", "a folder with at least two class subfolders holding images "
                   f"({', '.join(IMAGE_SUFFIXES[:3])}, ...)",
                   f"{path} with {len(bunch.target_names)} subfolder(s), {len(used)} holding images")
    # Subfolders without images are not classes; renumber the others 0 .. K-1.
    names = tuple(str(bunch.target_names[k]) for k in used)
    targets = np.searchsorted(used, np.asarray(bunch.target, dtype=np.int64))
    train, test = _split(_decode_images(list(bunch.filenames), image_size), targets)
    return DataSet(path.name or str(path), "classification", "image", train, test, len(names), names)


def _as_tensor(value: object, arg: str, index: int, what: str) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise fail(arg, f"a Dataset whose {what}s are tensors or arrays", f"a {type(value).__name__} "
                   f"at index {index}") from None


def _read_item(dataset: Dataset[Any], index: int, arg: str) -> tuple[Tensor, Tensor]:
    item = dataset[index]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise fail(arg, "a Dataset of (input, label) pairs", f"a {type(item).__name__} at index {index}")
    return _as_tensor(item[0], arg, index, "input"), _as_tensor(item[1], arg, index, "label")


def _check_integer(labels: Tensor, arg: str) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise fail(arg, "integer class labels", labels.dtype)


def _check_finite(inputs: Tensor, arg: str, first: int) -> None:
    """Refuse NaN or infinite inputs ``(N, ...)`` (rows numbered from ``first``), naming the first such row:
    one would turn every metric of every run into NaN, long after training started."""
    if not inputs.is_floating_point() and not inputs.is_complex():
        return
    bad = ~torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(1)
    if bool(bad.any()):
        row = first + int(torch.nonzero(bad)[0, 0])
        raise fail(arg, "finite inputs (no NaN or infinity)", f"a non-finite value in row {row}")


def read_split(dataset: object, arg: str, digest: Any) -> tuple[Tensor, tuple[int, ...]]:
    """Every label of ``dataset`` (stacked) and the input shape; feeds every input and label to ``digest``.

    One pass over the data, under fixed seeds so random transforms read the
    same way every time.
    """
    if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
        raise fail(arg, "a map-style torch Dataset of (input, label) pairs (with len())",
                   type(dataset).__name__)
    if isinstance(dataset, Split):
        _check_integer(dataset.targets, arg)
        _check_finite(dataset.inputs, arg, 0)
        for tensor in (dataset.inputs, dataset.targets):
            digest.update(tensor_bytes(tensor))
        return dataset.targets.long(), tuple(dataset.inputs.shape[1:])
    if len(dataset) == 0:
        raise fail(arg, "a Dataset with at least one item", "an empty one")
    torch.manual_seed(SPLIT_SEED)
    first_x, first_y = _read_item(dataset, 0, arg)
    shape, label_shape = tuple(first_x.shape), tuple(first_y.shape)
    labels = []
    for i in range(len(dataset)):
        x, y = (first_x, first_y) if i == 0 else _read_item(dataset, i, arg)
        if tuple(x.shape) != shape or tuple(y.shape) != label_shape:
            raise fail(arg, f"items of one shape (input {shape}, label {label_shape})",
                       f"input {tuple(x.shape)}, label {tuple(y.shape)} at index {i}")
        _check_finite(x[None], arg, i)
        digest.update(tensor_bytes(x))
        labels.append(y)
    stacked = torch.stack(labels)
    _check_integer(stacked, arg)
    digest.update(tensor_bytes(stacked.long()))
    return stacked.long(), shape


def _fast(dataset: Any) -> Any:
    """A TensorDataset of two tensors as a :class:`Split`, batched by indexing; anything else as is."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return Split(*dataset.tensors)
    return dataset


def _subset(dataset: Dataset[Any], index: np.ndarray) -> Dataset[Any]:
    if isinstance(dataset, Split):
        rows = torch.from_numpy(index)
        return Split(dataset.inputs[rows], dataset.targets[rows])
    return Subset(dataset, index.tolist())


def _hold_out(data: DataSet, labels: dict[str, Tensor], digest: Any, val_fraction: float) -> DataSet:
    """Split a fixed ``val_fraction`` of the training split off as validation (if none was given)."""
    if data.val is not None or val_fraction == 0.0:
        return replace(data, labels=labels, fingerprint=digest.hexdigest())
    train_labels = labels["train"]
    if train_labels.shape[0] < 2:
        raise fail("val_fraction", "a training split of at least 2 items to hold out from (or 0)",
                   train_labels.shape[0])
    stratify = data.task == "classification"
    if stratify:
        counts = torch.bincount(train_labels.reshape(-1).clamp(min=0))
        stratify = bool((counts[counts > 0] >= 2).all())
    kept, held = stratified_indices(train_labels.numpy(), val_fraction, stratify)
    digest.update(f"val {val_fraction!r}".encode())
    digest.update(held.astype(np.int64).tobytes())
    labels = {**labels, "train": train_labels[torch.from_numpy(kept)],
              "val": train_labels[torch.from_numpy(held)]}
    return replace(data, train=_subset(data.train, kept), val=_subset(data.train, held), labels=labels,
                   fingerprint=digest.hexdigest())


def _read_splits(splits: dict[str, object]) -> tuple[dict[str, Tensor], tuple[int, ...], Any]:
    digest = hashlib.sha256()
    labels: dict[str, Tensor] = {}
    shape: tuple[int, ...] = ()
    for name, split in splits.items():
        if split is not None:
            labels[name], split_shape = read_split(split, name, digest)
            shape = shape or split_shape
            if split_shape != shape:
                raise fail(name, f"inputs of the training split's shape {shape}", split_shape)
    return labels, shape, digest


def prepare(data: DataSet, *, val_fraction: float = VAL_FRACTION) -> DataSet:
    """``data`` with its labels read, its fingerprint taken and (unless given) a validation split held out.

    A prepared data set (it has a fingerprint) is returned as it is.
    """
    if data.fingerprint:
        return data
    labels, _, digest = _read_splits({"train": data.train, "val": data.val, "test": data.test})
    return _hold_out(data, labels, digest, val_fraction)


def _check_labels(labels: dict[str, Tensor], num_classes: int, ignore_index: int | None) -> None:
    for name, values in labels.items():
        valid = (values >= 0) & (values < num_classes)
        if ignore_index is not None:
            valid |= values == ignore_index
        if not bool(valid.all()):
            allowed = f"class labels in [0, {num_classes})" + (
                f" or ignore_index={ignore_index}" if ignore_index is not None else "")
            raise fail(name, allowed, int(values[~valid][0].item()))


#: A largest label at least this large, and more than twice the one below it, looks like an ignore label.
STRAY_LABEL = 16


def _infer_classes(labels: dict[str, Tensor], ignore_index: int | None) -> int:
    flat = torch.cat([values.reshape(-1) for values in labels.values()])
    if ignore_index is not None:
        flat = flat[flat != ignore_index]
    if flat.numel() == 0 or int(flat.min().item()) < 0:
        raise fail("train", "class labels >= 0 (or give ignore_index)",
                   "no labels" if flat.numel() == 0 else int(flat.min().item()))
    values = sorted(set(flat.tolist()))
    top = values[-1]
    below = values[-2] if len(values) > 1 else -1
    if top >= STRAY_LABEL and top > 2 * (below + 1):
        # 255 beside 0, 1, 2 is an ignore label (segmentation borders), not class 255 of 256.
        raise fail("train", f"class labels 0 .. C-1 (a label far above the others is usually an ignore "
                   f"label: give ignore_index={top} / --ignore-index {top}, or num_classes)",
                   f"labels {shorten(values)}")
    return int(top) + 1


def from_datasets(train: object, test: object, val: object = None, *, num_classes: int | None = None,
                  ignore_index: int | None = None, val_fraction: float = VAL_FRACTION,
                  name: str | None = None) -> DataSet:
    """The user's torch Datasets of ``(input, label)`` pairs as a :class:`DataSet`.

    Labels of shape ``()`` per item mean classification, ``(H, W)``
    segmentation. ``num_classes`` defaults to the largest label plus one
    (``ignore_index`` left out).
    """
    splits = {"train": _fast(train), "val": _fast(val), "test": _fast(test)}
    labels, shape, digest = _read_splits(splits)
    label_dims = labels["train"].dim() - 1
    if label_dims not in (0, 2):
        raise fail("train", "labels of shape () per item (classification) or (H, W) (segmentation)",
                   tuple(labels["train"].shape[1:]))
    if num_classes is None:
        classes = _infer_classes(labels, ignore_index)
    else:
        classes = v.check_int(num_classes, "num_classes")
    if classes < 2:
        raise fail("num_classes", "at least two classes", classes)
    _check_labels(labels, classes, ignore_index)
    given = getattr(train, "classes", None)
    names = tuple(map(str, given)) if isinstance(given, (list, tuple)) and len(given) == classes else tuple(
        str(k) for k in range(classes))
    kinds: dict[int, Kind] = {3: "image", 2: "signal", 1: "table"}
    kind = kinds.get(len(shape), "other")
    digest.update(f"classes {classes} ignore {ignore_index}".encode())
    data = DataSet(name or type(train).__name__, "segmentation" if label_dims == 2 else "classification",
                   kind, splits["train"], splits["test"], classes, names, ignore_index, splits["val"],
                   user=True)
    return _hold_out(data, labels, digest, val_fraction)


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

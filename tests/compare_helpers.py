"""User-side pieces for the compare tests: models, generated data sets, loaders (importable by workers).

Worker processes (``jobs=2``, Ray) and ``--model``/``--data`` import these by name, so they live at
module level here rather than inside a test.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

DIM = 6
CLASSES = 3
#: This folder (a git working directory when the tests run from a clone).
HERE = Path(__file__).resolve().parent


def blobs(n: int, *, seed: int, classes: int = CLASSES, dim: int = DIM) -> TensorDataset:
    """Gaussian blobs, one centre per class, well separated: any working model learns them."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 3
    labels = torch.arange(n) % classes
    inputs = centres[labels] + torch.randn(n, dim, generator=generator)
    return TensorDataset(inputs, labels)


class TinyNet(nn.Module):
    """A user's own network: attribute names the library knows nothing about."""

    def __init__(self, num_classes: int, dim: int = DIM) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, 16), nn.Tanh())
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.classifier(self.trunk(x))


def make_model(num_classes: int) -> nn.Module:
    return TinyNet(num_classes)


class WithProbe(nn.Module):
    """Its last nn.Linear (``probe``) is not the classifier: the picture needs ``penultimate=...``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh())
        self.classifier = nn.Linear(16, num_classes)
        self.probe = nn.Linear(16, 2)

    def forward(self, x):
        return self.classifier(self.trunk(x))


class Constant(nn.Module):
    """Ignores its input: it can only learn the class frequencies."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


class Diverging(nn.Module):
    """Outputs NaN: its loss is never finite."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, num_classes)

    def forward(self, x):
        return self.linear(x) * float("nan")


class SegNet(nn.Module):
    """A fully convolutional segmentation net with a 1x1 convolution head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2,
                                                                                     dilation=2), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


def make_segnet(num_classes: int) -> nn.Module:
    return SegNet(num_classes)


def too_wide(num_classes: int) -> nn.Module:
    """Two more outputs than there are classes."""
    return TinyNet(num_classes + 2)


def options() -> dict:
    """The user-side arguments of every compare test: blobs, :func:`make_model`, short settings that learn."""
    return {"model": make_model, "train": blobs(90, seed=1), "test": blobs(60, seed=2), "seeds": 2,
            "epochs": 3, "batch_size": 16, "lr": 0.01}


def loader():
    """``--data compare_helpers:loader``: (train, test)."""
    return blobs(90, seed=1), blobs(60, seed=2)


def loader_with_val():
    return blobs(90, seed=1), blobs(30, seed=3), blobs(60, seed=2)


def not_a_loader():
    return blobs(90, seed=1)


def not_a_factory(num_classes: int) -> int:
    return num_classes


class Slow(Dataset):
    """Blobs read one item at a time, with a pause of ``$COMPARE_HELPERS_PAUSE`` seconds (default 0) each.

    The pause makes a run last long enough to be interrupted, and changes no number.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.data = blobs(n, seed=seed)
        self.pause = float(os.environ.get("COMPARE_HELPERS_PAUSE", "0"))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        time.sleep(self.pause)
        return self.data[index]


def slow_loader():
    return Slow(90, seed=1), Slow(60, seed=2)


def run_for_resume(out: str, pause: float) -> None:
    """The comparison the resume test kills partway (:func:`options`, 3 seeds), with a ``pause`` per step,
    which changes no number."""
    from labelsmooth.experiments import compare

    compare(**{**options(), "seeds": 3}, out=out, resume=True, progress=lambda _: time.sleep(pause))


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 8) -> Path:
    """``per_class`` small PNGs per class subfolder, each class tinted its own color channel."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(12, 14, 3), dtype=np.uint8)
            pixels[..., k] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def make_table(path: Path, n: int = 90) -> Path:
    """A .csv or .parquet table: two numeric columns, a text column, the label column ``species``."""
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    frame = pd.DataFrame({
        "x1": rng.normal(labels, 0.5), "x2": rng.normal(-labels, 0.5),
        "color": np.where(labels == 0, "red", "blue"), "species": np.array(["a", "b", "c"])[labels],
    })
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> tuple[int, int]:
    """``path`` is a whole PNG saved at 150 dpi; returns its size in pixels."""
    from PIL import Image

    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert [round(d) for d in image.info["dpi"]] == [150, 150]
        return image.size


def check_svg(path: Path) -> None:
    """``path`` parses as XML whose root is an SVG element with drawing in it."""
    from xml.etree import ElementTree

    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(list(root.iter())) > 10


def summary_keys(names) -> set[str]:
    """The summary keys the issue names, spelled out here rather than taken from the library."""
    keys = {"temperature_mean", "temperature_ci95", "temperature_es_mean", "temperature_es_ci95",
            "best_epoch_mean", "best_epoch_ci95"}
    for name in names:
        keys |= {f"{name}_mean", f"{name}_ci95", f"{name}_ts_mean", f"{name}_ts_ci95"}
        keys |= {f"{name}_es_mean", f"{name}_es_ci95", f"{name}_es_ts_mean", f"{name}_es_ts_ci95"}
    return keys

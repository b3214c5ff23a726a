"""labelsmooth: label smoothing for PyTorch that is exact, lean and composable."""

from importlib import metadata

from labelsmooth import kernels, schedules
from labelsmooth._validation import content_checks
from labelsmooth.algorithms import (
    Algorithm,
    CutMix,
    Engine,
    Event,
    JSONLinesDestination,
    LabelSmoothing,
    Logger,
    MixUp,
    OnlineLabelSmoothing,
    PrintDestination,
    State,
    Trace,
)
from labelsmooth.binary import binary_cross_entropy_with_logits
from labelsmooth.dice import dice_loss
from labelsmooth.functional import cross_entropy, linear_cross_entropy, soft_cross_entropy
from labelsmooth.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    LinearCrossEntropyLoss,
)
from labelsmooth.soft_targets import SoftTargets
from labelsmooth.targets import ensure_targets_one_hot, smooth_labels

try:
    # One source for the version: pyproject.toml, read back from the installed metadata.
    __version__ = metadata.version("labelsmooth")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Algorithm",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "CutMix",
    "DiceCELoss",
    "DiceLoss",
    "Engine",
    "Event",
    "JSONLinesDestination",
    "LabelSmoothing",
    "LinearCrossEntropyLoss",
    "Logger",
    "MixUp",
    "OnlineLabelSmoothing",
    "PrintDestination",
    "SoftTargets",
    "State",
    "Trace",
    "binary_cross_entropy_with_logits",
    "content_checks",
    "cross_entropy",
    "dice_loss",
    "ensure_targets_one_hot",
    "kernels",
    "linear_cross_entropy",
    "schedules",
    "smooth_labels",
    "soft_cross_entropy",
]

"""labelsmooth: label smoothing for PyTorch that is exact, lean and composable."""

from importlib import metadata
from typing import TYPE_CHECKING, Any

from labelsmooth import _lazy

if TYPE_CHECKING:
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

#: Where each public name lives. Imported at its first use (:mod:`labelsmooth._lazy`): ``import
#: labelsmooth`` and ``labelsmooth --help`` need neither torch nor ``torch._dynamo``.
_WHERE = {
    **{name: "labelsmooth.algorithms" for name in (
        "Algorithm", "CutMix", "Engine", "Event", "JSONLinesDestination", "LabelSmoothing", "Logger", "MixUp",
        "OnlineLabelSmoothing", "PrintDestination", "State", "Trace")},
    **{name: "labelsmooth.losses" for name in (
        "BCEWithLogitsLoss", "CrossEntropyLoss", "DiceCELoss", "DiceLoss", "LinearCrossEntropyLoss")},
    **{name: "labelsmooth.functional" for name in (
        "cross_entropy", "linear_cross_entropy", "soft_cross_entropy")},
    "binary_cross_entropy_with_logits": "labelsmooth.binary", "dice_loss": "labelsmooth.dice",
    "SoftTargets": "labelsmooth.soft_targets", "content_checks": "labelsmooth._validation",
    "ensure_targets_one_hot": "labelsmooth.targets", "smooth_labels": "labelsmooth.targets",
    "kernels": "labelsmooth.kernels", "schedules": "labelsmooth.schedules",
}

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


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, globals(), name, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""Training-loop algorithms in MosaicML Composer's Event / State / Engine protocol."""

from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.cutmix import CutMix
from labelsmooth.algorithms.engine import Engine, Trace
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.label_smoothing import LabelSmoothing
from labelsmooth.algorithms.logger import JSONLinesDestination, Logger, PrintDestination
from labelsmooth.algorithms.mixup import MixUp
from labelsmooth.algorithms.online_label_smoothing import OnlineLabelSmoothing
from labelsmooth.algorithms.state import State

__all__ = [
    "Algorithm",
    "CutMix",
    "Engine",
    "Event",
    "JSONLinesDestination",
    "LabelSmoothing",
    "Logger",
    "MixUp",
    "OnlineLabelSmoothing",
    "PrintDestination",
    "State",
    "Trace",
]

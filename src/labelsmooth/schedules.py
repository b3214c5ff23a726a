"""Schedules for ``alpha``: ``LabelSmoothing(alpha=schedules.Cosine(0.1, 0.0, duration=10_000))``.

Re-exports :mod:`labelsmooth.algorithms.schedules`, where they are defined.
"""

from labelsmooth.algorithms.schedules import Constant, Cosine, Linear, Schedule, Step, WarmupDecay

__all__ = ["Constant", "Cosine", "Linear", "Schedule", "Step", "WarmupDecay"]

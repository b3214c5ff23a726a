"""The algorithm protocol, in MosaicML Composer's shape."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import State

__all__ = ["Algorithm"]


class Algorithm(ABC):
    """Something that changes training at chosen :class:`Event`\\ s.

    Subclasses say which events they act on in :meth:`match` and act in
    :meth:`apply`. ``hparams`` (a dict of constructor arguments) drives
    ``__repr__`` and the default :meth:`state_dict`.
    """

    @property
    def hparams(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def match(self, event: Event, state: State) -> bool:
        """Whether :meth:`apply` should run at ``event``."""

    @abstractmethod
    def apply(self, event: Event, state: State, logger: Logger) -> int | None:
        """Act on ``state``; the return value is recorded as the trace's exit code."""

    def check_composition(self, algorithms: Sequence[Algorithm]) -> None:  # noqa: B027 (optional hook)
        """Raise if this algorithm cannot work alongside ``algorithms`` (the Engine's whole list).

        The :class:`Engine` calls it at start-up, so a list that cannot work
        fails before training rather than silently during it.
        """

    def state_dict(self) -> dict[str, Any]:
        return {"hparams": dict(self.hparams)}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Nothing to restore by default: options come from the constructor."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={x!r}" for k, x in self.hparams.items())
        return f"{type(self).__name__}({args})"

"""The engine that runs algorithms at events and records what ran."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import State

__all__ = ["Engine", "Trace"]


@dataclass(frozen=True)
class Trace:
    """One algorithm's record at one event: whether it ran, in what order, and its exit code."""

    name: str
    event: Event
    run: bool
    order: int | None = None
    exit_code: int | None = None


class Engine:
    """Runs ``algorithms`` on ``state`` at each event, as Composer's engine does.

    Algorithms run in list order, and in reverse order on ``AFTER_*`` events, so
    that the algorithm that changed something first undoes it last. At start-up
    each algorithm's ``check_composition`` sees the whole list and raises if
    the combination cannot work.
    """

    def __init__(
        self, state: State, algorithms: Sequence[Algorithm] = (), logger: Logger | None = None
    ) -> None:
        self.state = state
        self.algorithms = list(algorithms)
        for algorithm in self.algorithms:
            algorithm.check_composition(self.algorithms)
        self.logger = logger if logger is not None else Logger()
        #: The latest trace of each algorithm at each event, keyed
        #: ``"<Algorithm>/<EVENT>"``: bounded however long training runs.
        self.traces: dict[str, Trace] = {}

    def run_event(self, event: Event) -> list[Trace]:
        """Run every matching algorithm at ``event``; return one trace per algorithm.

        The traces of algorithms that ran also go to ``logger.log_traces``.
        """
        ordered = reversed(self.algorithms) if event.is_after_event else iter(self.algorithms)
        traces: list[Trace] = []
        order = 0
        for algorithm in ordered:
            name = type(algorithm).__name__
            if algorithm.match(event, self.state):
                exit_code = algorithm.apply(event, self.state, self.logger)
                traces.append(Trace(name, event, True, order, exit_code))
                order += 1
            else:
                traces.append(Trace(name, event, False))
        self.traces.update({f"{t.name}/{event.name}": t for t in traces})
        ran = {f"algorithm_traces/{t.name}/{event.name}": t.exit_code for t in traces if t.run}
        if ran:
            self.logger.log_traces(ran)
        return traces

    @contextmanager
    def loss_events(self) -> Iterator[State]:
        """Run ``BEFORE_LOSS`` on entry and ``AFTER_LOSS`` on exit, also when the body raises.

        Example:
            >>> engine = Engine(State())
            >>> with engine.loss_events() as state:
            ...     state.loss = 0.0
            >>> sorted(engine.traces)
            []
        """
        self.run_event(Event.BEFORE_LOSS)
        try:
            yield self.state
        except BaseException:
            # The body's error is the one to see: AFTER_LOSS still runs (it restores the targets),
            # but what it cannot do without a loss (interpolate one) must not replace that error.
            with contextlib.suppress(Exception):
                self.run_event(Event.AFTER_LOSS)
            raise
        self.run_event(Event.AFTER_LOSS)

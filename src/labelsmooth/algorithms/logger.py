"""A small logger: keeps everything in memory and forwards it to destinations."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

__all__ = ["Destination", "JSONLinesDestination", "Logger", "PrintDestination"]


class Destination(Protocol):
    """Somewhere a :class:`Logger` sends records: ``{"kind": ..., "step": ..., "data": {...}}``."""

    def write(self, record: dict[str, Any]) -> None: ...


def _jsonable(value: Any) -> Any:
    """Tensors and numpy scalars become Python numbers or lists; the rest is left as is."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(x) for x in value]
    return value


class PrintDestination:
    """Prints one line per record to ``stream`` (standard output by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        items = ", ".join(f"{k}={_jsonable(x)}" for k, x in record["data"].items())
        print(f"[{record['kind']} step={record['step']}] {items}", file=self.stream or sys.stdout)


class JSONLinesDestination:
    """Appends one JSON object per record to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")


class Logger:
    """Keeps metrics, hyperparameters and traces in memory, in arrival order.

    Example:
        >>> logger = Logger()
        >>> logger.log_metrics({"loss": 0.5}, step=3)
        >>> logger.records
        [{'kind': 'metrics', 'step': 3, 'data': {'loss': 0.5}}]
    """

    def __init__(self, destinations: list[Destination] | tuple[Destination, ...] = ()) -> None:
        self.destinations = list(destinations)
        self.records: list[dict[str, Any]] = []

    def _log(self, kind: str, data: dict[str, Any], step: int | None) -> None:
        record = {"kind": kind, "step": step, "data": dict(data)}
        self.records.append(record)
        for destination in self.destinations:
            destination.write(record)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._log("metrics", metrics, step)

    def log_hyperparameters(self, hyperparameters: dict[str, Any]) -> None:
        self._log("hyperparameters", hyperparameters, None)

    def log_traces(self, traces: dict[str, Any]) -> None:
        self._log("traces", traces, None)

    def metrics(self, name: str) -> list[Any]:
        """Every value logged under metric ``name``, in order."""
        return [r["data"][name] for r in self.records if r["kind"] == "metrics" and name in r["data"]]

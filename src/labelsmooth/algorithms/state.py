"""The training state that algorithms read and change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from labelsmooth import _validation as v

__all__ = ["BatchKey", "State", "batch_get", "batch_set", "logits_of"]

#: A batch key: a position, a name, or a ``(getter, setter)`` pair where
#: ``getter(batch) -> value`` and ``setter(batch, value) -> new batch``.
BatchKey = int | str | tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]


def _is_namedtuple(batch: object) -> bool:
    return isinstance(batch, tuple) and hasattr(batch, "_fields")


def batch_get(batch: Any, key: BatchKey) -> Any:
    """Read ``key`` from a tuple, list, dict or namedtuple ``batch``."""
    if isinstance(key, tuple):
        getter, _ = key
        return getter(batch)
    try:
        if isinstance(key, str) and _is_namedtuple(batch):
            return getattr(batch, key)
        return batch[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise v.fail(
            "target_key", f"a key that the batch ({type(batch).__name__}) has", key
        ) from None


def batch_set(batch: Any, key: BatchKey, value: Any) -> Any:
    """Return ``batch`` with ``key`` set to ``value``.

    The caller's container is never changed: tuples and namedtuples are
    rebuilt, lists and dicts are copied (shallowly) before the assignment.
    """
    if isinstance(key, tuple):
        _, setter = key
        return setter(batch, value)
    batch_get(batch, key)  # raises the library's error for a missing key
    if _is_namedtuple(batch):
        if isinstance(key, int):
            key = batch._fields[key]
        return batch._replace(**{str(key): value})
    if isinstance(batch, tuple):
        items = list(batch)
        items[key] = value  # type: ignore[index]
        return tuple(items)
    if isinstance(batch, list):
        items = list(batch)
        items[key] = value  # type: ignore[index]
        return items
    if isinstance(batch, dict):
        return {**batch, key: value}
    raise v.fail("batch", "a tuple, list, dict or namedtuple", type(batch).__name__, error=TypeError)


def logits_of(outputs: Any) -> Tensor:
    """The logits in a model's outputs: a Tensor, a ``"logits"`` entry, or a ``logits`` attribute."""
    if isinstance(outputs, Tensor):
        return outputs
    logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise v.fail(
        "state.outputs", "a Tensor, a dict with 'logits' or an object with .logits",
        type(outputs).__name__, error=TypeError,
    )


@dataclass(kw_only=True)
class State:
    """What a training step has at hand; every field is optional.

    ``outputs`` is what the model returned (a Tensor, a dict with ``"logits"``
    or an object with a ``logits`` attribute); ``batch`` is what the data
    loader gave.
    """

    batch: Any = None
    outputs: Any = None
    loss: Any = None
    model: Any = None
    optimizers: Any = None
    epoch: int = 0
    batch_idx: int = 0
    step: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def batch_get_item(self, key: BatchKey) -> Any:
        """Read ``key`` from ``self.batch``; see :func:`batch_get`."""
        return batch_get(self.batch, key)

    def batch_set_item(self, key: BatchKey, value: Any) -> None:
        """Replace ``self.batch`` by a copy with ``key`` set to ``value``."""
        self.batch = batch_set(self.batch, key, value)

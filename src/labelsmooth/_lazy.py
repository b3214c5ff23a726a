"""Imports deferred to first use, and never cut in half by Ctrl-C.

``import labelsmooth`` and ``labelsmooth --help`` must not pay for torch and
``torch._dynamo`` (5 s or more on a busy machine), so the packages import
them at the first use of a name that needs them (PEP 562 ``__getattr__``).
A deferred import can then run at any moment of a program, and a Ctrl-C that
lands inside it used to leave a half-imported module behind (a later
``AttributeError`` instead of the interrupt, see
:data:`labelsmooth.kernels.dispatch.COMPILE_ERRORS`). :func:`uninterrupted`
holds SIGINT while the import runs and raises it again once the import has
finished, so the program still ends as a clean ``KeyboardInterrupt``, a moment
later, with every module whole.
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["attribute", "uninterrupted"]


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT for the body; one that arrived meanwhile is raised again when it ends.

    A Python-level handler, not a signal mask: a process-directed SIGINT may
    be delivered to any thread (torch starts some), and Python still runs its
    handler in the main thread between bytecodes, so a mask on the main thread
    alone lets it through. Main thread only (where handlers can be set); the
    body runs as is elsewhere.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _: arrived.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived:  # the user's Ctrl-C, now that every module is whole: the usual handler takes it
            signal.raise_signal(signal.SIGINT)


def attribute(package: str, namespace: dict[str, Any], name: str, table: Mapping[str, str]) -> Any:
    """``package``'s attribute ``name`` from the module ``table[name]``, imported uninterrupted and kept
    in ``namespace`` (the package's globals), so the next access costs nothing."""
    module_name = table.get(name)
    if module_name is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    with uninterrupted():
        module = importlib.import_module(module_name)
    value = module if module_name == f"{package}.{name}" else getattr(module, name)
    namespace[name] = value
    return value

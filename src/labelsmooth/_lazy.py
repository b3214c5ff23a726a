"""Imports deferred to first use, and never cut in half by Ctrl-C.

``import labelsmooth`` and ``labelsmooth --help`` must not pay for torch and
``torch._dynamo`` (5 s or more on a busy machine), so the packages import
them at the first use of a name that needs them (PEP 562 ``__getattr__``).
A deferred import can then run at any moment of a program, and a Ctrl-C that
lands inside it used to leave a half-imported module behind (a later
``AttributeError`` instead of the interrupt, see
:data:`labelsmooth.kernels.dispatch.COMPILE_ERRORS`). :func:`uninterrupted`
holds SIGINT while the import runs and lets it through once the import has
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
    """Hold SIGINT for the body; one that arrived meanwhile is delivered when it ends.

    POSIX only, and only in the main thread (where Python runs its signal
    handlers); elsewhere the body runs as is.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        # A pending SIGINT is delivered here, and Python raises KeyboardInterrupt right after.
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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

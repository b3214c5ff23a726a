"""Which kernel runs: the one dispatch rule, and the Inductor-compiled row functions.

Two backends compute the same math (:mod:`labelsmooth.kernels.rowmath`):

* ``"inductor"``: the row functions compiled by ``torch.compile`` (dynamic
  shapes, cached on disk by Inductor) into one loop over rows, a single
  parallel region per call: C++ with OpenMP on CPU, Triton on CUDA. A
  descheduled thread then delays only its own rows, which is what keeps the
  kernel fast on a busy machine.
* ``"chunked"``: eager ATen operations over row chunks
  (:mod:`labelsmooth.kernels.chunked`; for the linear kernel, whose chunks
  are already small, the plain row functions). It needs no compiler and
  always works.
* ``"triton"``: the fused output layer runs labelsmooth's own Triton kernels
  (:mod:`labelsmooth.kernels.triton_linear`, no logits in memory); the row
  functions run as under ``"inductor"`` (whose code is Triton on CUDA). On
  CUDA with Triton installed, and on CPU tensors in Triton's interpreter when
  ``TRITON_INTERPRET=1`` is set (how a machine without a GPU tests them).

The rule, for ``LABELSMOOTH_KERNEL=auto`` (the default): ``"triton"`` on CUDA
when Triton is importable; elsewhere ``"inductor"`` when Inductor can build
code for the device (a C++ compiler on CPU), else ``"chunked"``.
``LABELSMOOTH_KERNEL=chunked|inductor|triton``, :func:`set_backend` or
:func:`use_backend` force one (``"triton"`` where it cannot run: the auto
rule); :func:`backend` says which one a call runs.

The fallback, for every step that runs a compiled row function (a forward,
a backward's gradient, a chunk of the linear kernel), is :func:`run`'s: when
the compiled code cannot run, that step runs on the ``"chunked"`` backend
instead, whose buffers are chunk-sized (the plain row functions on the whole
logits would allocate several logits-sized ones). A failed compilation warns
once and moves the device to ``"chunked"`` for the rest of the process
(:func:`failure` says why); a new variant past :data:`RECOMPILE_LIMIT` warns
once per process and runs ``"chunked"`` for that call only. Under an outer
``torch.compile`` the row functions are traced in place and nothing falls back.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from labelsmooth import _validation as v
from labelsmooth.kernels import rowmath

__all__ = [
    "BACKENDS", "COMPILE_ERRORS", "RECOMPILE_LIMIT", "RecompileLimitError", "backend", "compiled",
    "compiles_rows", "failure", "run", "run_row_function", "set_backend", "use_backend",
]

BACKENDS = ("auto", "inductor", "chunked", "triton")

#: What a failed compilation raises (Dynamo wraps Inductor's and the C++
#: compiler's errors in these); anything else propagates. Naming them imports
#: ``torch._dynamo`` with the package, on purpose: imported lazily at the first
#: compiled call instead, a Ctrl-C landing inside that import can be lost or
#: leave a half-imported module behind.
COMPILE_ERRORS: tuple[type[Exception], ...] = (
    torch._dynamo.exc.BackendCompilerFailed,
    torch._dynamo.exc.Unsupported,
)

_requested = os.environ.get("LABELSMOOTH_KERNEL", "auto")
#: Device types whose compilation failed in this process, with the reason.
_failed: dict[str, str] = {}
#: The first :class:`RecompileLimitError` of this process, once there was one.
_past_limit: list[str] = []

_T = TypeVar("_T")


def set_backend(name: str) -> None:
    """Choose the kernel backend for this process: ``"auto"``, ``"inductor"``, ``"chunked"``
    or ``"triton"``."""
    global _requested
    _requested = v.check_choice(name, "backend", BACKENDS)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the ``with`` block on backend ``name`` (as :func:`set_backend`), then restore the
    previous request (``LABELSMOOTH_KERNEL``'s, or the last :func:`set_backend`'s), also
    when the block raises.

    Example:
        >>> with use_backend("chunked"):
        ...     backend("cpu")
        'chunked'
    """
    global _requested
    previous = _requested
    set_backend(name)
    try:
        yield
    finally:
        _requested = previous


def backend(device: torch.device | str = "cpu") -> str:
    """The backend that a call on ``device`` runs now: ``"inductor"``, ``"chunked"`` or ``"triton"``.

    Example:
        >>> backend("cpu") in ("inductor", "chunked")
        True
    """
    device_type = torch.device(device).type
    requested = v.check_choice(_requested, "LABELSMOOTH_KERNEL", BACKENDS)
    if requested == "chunked" or device_type in _failed:
        return "chunked"
    wants_triton = requested == "triton" or (requested == "auto" and device_type == "cuda")
    if wants_triton and _triton_runs(device_type):
        return "triton"
    if requested == "inductor" or _inductor_supports(device_type):
        return "inductor"
    return "chunked"


def failure(device: torch.device | str = "cpu") -> str | None:
    """Why the Inductor backend was given up on ``device`` in this process, or ``None``."""
    return _failed.get(torch.device(device).type)


def compiles_rows(device: torch.device | str) -> bool:
    """Whether the row functions run Inductor's code on ``device`` (``"inductor"``, and
    ``"triton"`` where Inductor can build code for the device)."""
    name = backend(device)
    return name == "inductor" or (name == "triton" and _inductor_supports(torch.device(device).type))


def _triton_runs(device_type: str) -> bool:
    """Triton is installed, and the device is CUDA, or CPU under ``TRITON_INTERPRET=1``."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return (device_type == "cuda" or (device_type == "cpu" and interpreted)) and _triton_installed()


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _inductor_supports(device_type: str) -> bool:
    if device_type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        return any(shutil.which(name) for name in (compiler, "g++", "c++", "clang++"))
    if device_type == "cuda":
        return _triton_installed()
    return False


#: Inductor options for the row functions. ``cpp.dynamic_threads``: a parallel
#: region always, with the thread count left to OpenMP. Without it the code
#: Inductor writes (and caches on disk, for every later shape) is serial when
#: the first shape it compiled was small. ``cpp.use_decompose_tanh``: the
#: softcap's ``tanh`` as ``2 / (1 + exp(-2x)) - 1``, which halves what the cap
#: adds to the kernel against the vectorized library ``tanh`` (its absolute
#: error is about one rounding of 1, times the cap, in the capped logits).
INDUCTOR_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {
    "cpp.dynamic_threads": True, "cpp.use_decompose_tanh": True,
}


#: Graphs Dynamo may build per row function in one process. One graph per
#: dtype, layout, component count, class-mass form and option set (softcap,
#: z-loss): a training run meets a handful, a long test session a few hundred,
#: far more than Dynamo's default of 8, so the limits are raised for these
#: calls only.
RECOMPILE_LIMIT = 256


class RecompileLimitError(RuntimeError):
    """A row function met a new variant after :data:`RECOMPILE_LIMIT` graphs in this process."""


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    compiled_fn = torch.compile(fn, dynamic=True, fullgraph=True, options=INDUCTOR_OPTIONS)

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        try:
            with torch._dynamo.config.patch(
                recompile_limit=RECOMPILE_LIMIT, accumulated_recompile_limit=4 * RECOMPILE_LIMIT
            ):
                return compiled_fn(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit as error:
            limit = f"{fn.__name__}: Dynamo's recompile limit ({RECOMPILE_LIMIT}) reached"
            raise RecompileLimitError(limit) from error

    return run


_COMPILED = {
    name: _compile(getattr(rowmath, name)) for name in ("fused_rows", "row_statistics", "row_gradient")
}


def _eager_only() -> bool:
    """Plain torch code instead of the compiled functions: while an outer
    ``torch.compile`` traces (it compiles them in place) or a dispatch mode
    (fake tensors, operator counters) is active, under which Dynamo does not run."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None


def compiled(name: str) -> Callable[..., Any]:
    """The row function ``name`` of :mod:`rowmath` as the ``"inductor"`` backend runs it (plain
    torch while :func:`_eager_only`). Calling it raises :class:`RecompileLimitError` for a new
    variant past the limit, or one of :data:`COMPILE_ERRORS` when compiling fails: call it
    inside :func:`run`, which owns the fallback."""
    if _eager_only():
        return getattr(rowmath, name)  # type: ignore[no-any-return]
    return _COMPILED[name]


def run(device: torch.device, *, inductor: Callable[[], _T], chunked: Callable[[], _T]) -> _T:
    """One step on the backend that ``device`` runs: ``inductor()`` (which calls :func:`compiled`)
    where :func:`compiles_rows`, else ``chunked()``, and ``chunked()`` when ``inductor()``
    cannot compile (the module's rule).

    Traced by an outer ``torch.compile``, the step is always ``inductor()``, whose row
    functions the outer compiler then compiles in place; its errors propagate.
    """
    tracing = torch.compiler.is_compiling()
    if not tracing and not compiles_rows(device):
        return chunked()
    try:
        return inductor()
    except RecompileLimitError as error:
        if tracing:
            raise
        _warn_past_limit(error)
    except COMPILE_ERRORS as error:
        if tracing:
            raise
        _give_up(device, error)
    return chunked()


def run_row_function(name: str, device: torch.device, *args: Any) -> Any:
    """:func:`run` for a step that is one row function on chunk-sized inputs (the linear
    kernel's chunks): compiled, or plain torch on the ``"chunked"`` backend."""
    return run(
        device,
        inductor=lambda: compiled(name)(*args),
        chunked=lambda: getattr(rowmath, name)(*args),
    )


def _warn_past_limit(error: RecompileLimitError) -> None:
    """Warn, once per process, that new variants leave the compiled kernel."""
    if _past_limit:
        return
    _past_limit.append(str(error))
    warnings.warn(
        f"labelsmooth: {error}; new shapes, dtypes or options run the chunked kernel "
        "(labelsmooth.kernels.dispatch.RECOMPILE_LIMIT sets the limit)",
        RuntimeWarning,
        stacklevel=4,
    )


def _give_up(device: torch.device, error: Exception) -> None:
    """Record that Inductor failed on ``device``; warn once; later calls run ``"chunked"``."""
    reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    _failed[device.type] = reason
    warnings.warn(
        f"labelsmooth: compiling the fused kernel failed on {device.type} ({reason}); "
        "using the chunked kernel from now on (set LABELSMOOTH_KERNEL=chunked to skip the attempt)",
        RuntimeWarning,
        stacklevel=4,
    )

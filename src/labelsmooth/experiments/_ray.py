"""Joining or starting Ray for :func:`~.executors.run_ray`: a local instance on loopback, imports checked.

A Ray head runs any code sent to it, so the instance labelsmooth starts
itself listens on 127.0.0.1 only, and its workers get this process's import
path (a model factory importable through a script's folder or a test
directory works there as it does here). On a cluster labelsmooth only
joins, the workers' import path is the cluster's business: before any run is
submitted, one probe task imports every module the runs need and a module
that is missing is named in one line, with how to ship it.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import pickletools
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from labelsmooth.experiments.data import fail

__all__ = ["LOOPBACK", "check_workers", "connect", "needed_modules", "shipped_path"]

LOOPBACK = "127.0.0.1"


def shipped_path() -> list[str]:
    """The entries of ``sys.path`` the workers need: absolute, existing folders outside the interpreter's
    own prefixes (those the workers have already); ``""`` is the working directory."""
    prefixes = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries = []
    for entry in sys.path:
        path = Path(entry or os.getcwd()).resolve()
        inside = any(str(path) == p or str(path).startswith(p + os.sep) for p in prefixes)
        if path.is_dir() and not inside:
            entries.append(str(path))
    return list(dict.fromkeys(entries))


@contextmanager
def _loopback_only(ray: ModuleType) -> Any:
    """Let Ray keep 127.0.0.1 as the node's address.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is replaced by the
    machine's routable address unless Ray believes clusters are disabled (its
    rule for macOS and Windows), a module constant read while the node starts.
    """
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if saved is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[union-attr]
    try:
        yield
    finally:
        if saved is not None:
            constants.ENABLE_RAY_CLUSTER = saved  # type: ignore[union-attr]


def connect(ray: ModuleType, address: str | None, threads: int) -> tuple[bool, bool]:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``, or the one already joined), or start a local one.

    Returns whether this call connected (so the caller disconnects) and
    whether it started a local instance: bound to 127.0.0.1, without a
    dashboard, its workers' ``PYTHONPATH`` set to :func:`shipped_path`.
    ``threads`` is the CPUs one run asks for; the local instance has at least that many.
    """
    if ray.is_initialized():
        return False, False
    if address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return True, False
    path = os.pathsep.join([*shipped_path(), *filter(None, [os.environ.get("PYTHONPATH")])])
    with _loopback_only(ray):
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, log_to_driver=False,
                 num_cpus=max(threads, os.cpu_count() or 1), runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True, True


def needed_modules(obj: object) -> list[str]:
    """The top-level modules that unpickling ``obj`` imports (``__main__`` and builtins left out: Ray ships
    ``__main__``'s functions by value). Empty when plain pickle cannot take ``obj``."""
    stream = io.BytesIO()
    try:
        # Protocol 2 names every class and function in a GLOBAL opcode ("module name"), never memoized.
        pickle.dump(obj, stream, protocol=2)
    except (pickle.PicklingError, AttributeError, TypeError):
        return []
    names = [str(arg).split(" ")[0] for opcode, arg, _ in pickletools.genops(stream.getvalue())
             if opcode.name == "GLOBAL"]
    tops = (name.split(".")[0] for name in names)
    return sorted({top for top in tops if top not in ("__main__", "builtins", "copyreg")})


def check_workers(ray: ModuleType, obj: object) -> None:
    """Raise in one line naming a module the cluster's workers cannot import, before any run is sent."""
    names = needed_modules(obj)
    if not names:
        return

    def missing_modules(wanted: list[str]) -> list[str]:
        # Nested, so Ray ships it by value: a worker runs it without importing labelsmooth.
        import importlib.util

        return [name for name in wanted if importlib.util.find_spec(name) is None]

    missing = ray.get(ray.remote(missing_modules).options(num_cpus=0, max_retries=0).remote(names))
    if missing:
        spec = importlib.util.find_spec(missing[0])
        where = spec.origin if spec is not None and spec.origin else missing[0]
        shipped = str(Path(where).parent) if Path(where).name == "__init__.py" else where
        raise fail("executor", "Ray workers that can import every module the runs need (ship it with "
                   f"ray.init(runtime_env={{'py_modules': [{shipped!r}]}}) before compare)",
                   f"module {missing[0]!r} missing on the workers")

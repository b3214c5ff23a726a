"""Where a comparison's numbers came from: versions, the call, the device, the time, the git commit.

The report prints it; ``metrics.json`` leaves it out, so that a resumed
comparison writes the same ``metrics.json`` as an uninterrupted one.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["call_text", "finish", "git_commit", "start"]

#: Seconds a ``git`` query may take before the commit is reported as unknown.
GIT_TIMEOUT = 5.0


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder`` (marked when tracked files differ from it), or ``None``."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return commit + (" + uncommitted changes" if changes else "")


def _shown(value: object) -> str:
    """A value as the call shows it: literals as written, callables by name, data sets by type."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, float)) for x in value):
        return repr(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return f"<{type(value).__name__}>"


def call_text(arguments: Mapping[str, object], defaults: Mapping[str, object]) -> str:
    """``compare(...)`` with the arguments that differ from their defaults.

    Example:
        >>> call_text({"dataset": "digits", "seeds": 5, "epochs": None}, {"seeds": 3, "epochs": None})
        "compare('digits', seeds=5)"
    """
    shown = []
    for name, value in arguments.items():
        if name == "dataset":
            if value is not None:
                shown.append(_shown(value))
            continue
        default = defaults.get(name)
        same = value is default or (type(value) is type(default) and _equal(value, default))
        if not same:
            shown.append(f"{name}={_shown(value)}")
    return f"compare({', '.join(shown)})"


def _equal(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a tensor or a data set: not a literal the call could show as the default
        return False


def start(call: str, device: str) -> dict[str, Any]:
    """Everything known before the first run: versions, the command line, the call, the device, the time."""
    try:
        version = metadata.version("labelsmooth")
    except metadata.PackageNotFoundError:
        version = "not installed"
    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(torch.device(device)) if cuda else platform.processor()
    return {
        "labelsmooth": version, "torch": torch.__version__, "python": platform.python_version(),
        "command_line": shlex.join(sys.argv), "call": call,
        "device": f"{device} ({name})" if name else device,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(Path.cwd()), "_clock": time.perf_counter(),
    }


def finish(provenance: dict[str, Any]) -> dict[str, Any]:
    """``provenance`` with the wall time since :func:`start` (seconds)."""
    return {**provenance, "wall_seconds": time.perf_counter() - provenance["_clock"]}

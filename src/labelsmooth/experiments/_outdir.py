"""The output folder of a comparison: the store's name and the check that ``out`` can take the results.

Apart from :mod:`._store` so that :class:`~._config.CompareConfig` can check
``out`` without importing what the store needs (the results, the figures).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelsmooth._validation import fail
from labelsmooth.experiments._records import PREDICTIONS

__all__ = ["STORE", "check_empty", "check_out", "read_lines"]

STORE = "runs.jsonl"


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The parsed lines of ``path`` and the byte length of its complete ones."""
    data = path.read_bytes()
    lines, good = [], 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            break
        good += len(raw)
    return lines, good


def check_out(out: Path, *, resume: bool, overwrite: bool,
              flags: Sequence[str] = ("resume", "overwrite")) -> None:
    """Refuse an ``out`` that cannot be written, or that holds files without ``resume`` or ``overwrite``.

    ``flags`` are the names the message gives them (the CLI's ``--resume``).
    """
    if resume and overwrite:
        raise fail(flags[0], f"either {flags[0]} or {flags[1]}, not both", "both")
    held = _writable(out)
    if not resume and _no_finished_run(out, held):
        held = []  # a comparison that failed before its first run ended: nothing there to keep
    if held and not (resume or overwrite):
        _refuse(out, held, f"an empty or new folder ({flags[0]} continues the runs in it, "
                f"{flags[1]} replaces them)")
    if resume and held and not (out / STORE).exists():
        raise fail(flags[0], f"a folder with a {STORE} to resume from",
                   f"{out} holding {', '.join(held[:4])}")


def check_empty(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``out`` that cannot be written, or that holds files without ``overwrite``
    (:func:`~labelsmooth.experiments.compare_runs`, which has nothing to resume)."""
    held = _writable(out)
    if held and not overwrite:
        _refuse(out, held, "an empty or new folder (or overwrite=True)")


def _writable(out: Path) -> list[str]:
    """The names ``out`` holds, once it is known to be a folder (or a path to one) this user can write."""
    if out.exists() and not out.is_dir():
        raise fail("out", "a directory (or a path to create one)", str(out))
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail("out", "a directory this user can write", str(out))
    return sorted(p.name for p in out.iterdir()) if out.is_dir() else []


def _refuse(out: Path, held: list[str], expected: str) -> None:
    shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
    raise fail("out", expected, f"{out} holding {shown}")


def _no_finished_run(out: Path, held: list[str]) -> bool:
    """Whether ``out`` holds only a store without a finished run (and an empty ``predictions/``)."""
    if STORE not in held or not set(held) <= {STORE, PREDICTIONS}:
        return False
    if (out / PREDICTIONS).is_dir() and any((out / PREDICTIONS).iterdir()):
        return False
    lines, _ = read_lines(out / STORE)
    return not any(line.get("type") == "run" for line in lines)

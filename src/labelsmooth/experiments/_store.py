"""The run store: ``runs.jsonl`` in ``out``, one line per finished run, appended as each run ends.

The first line holds the settings and their hash; every run line carries the
hash too. Resuming reads the finished runs back and refuses settings whose
hash differs. A last line cut short (the process was killed mid-write) is
dropped. The report files are derived from the store alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelsmooth.experiments._figures import FIGURES
from labelsmooth.experiments._outdir import STORE, check_out, read_lines
from labelsmooth.experiments._records import PREDICTIONS
from labelsmooth.experiments._results import RunResult
from labelsmooth.experiments.data import fail

__all__ = ["REPORT_FILES", "STORE", "RunStore", "check_out", "settings_hash"]

#: What a comparison writes to ``out`` besides the store (``overwrite`` replaces exactly these).
REPORT_FILES = ("metrics.json", *(f"{name}.{kind}" for name in FIGURES for kind in ("png", "svg")),
                "report.md")
#: 2: runs carry temperature-scaled metrics and their temperature; 3: whether that fit can be trusted,
#: and every run's record in ``predictions/``; 4: the early-stopped measurements (``early_stopped``).
FORMAT = 4


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of everything that changes a run's result."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")


@dataclass
class RunStore:
    """``out / runs.jsonl`` for one set of settings."""

    path: Path
    digest: str

    @classmethod
    def open(cls, out: Path, settings: dict[str, Any], *, resume: bool) -> tuple[RunStore, list[RunResult]]:
        """Start the store (``resume``: continue it) and return it with the runs it already holds."""
        digest = settings_hash(settings)
        store = cls(out / STORE, digest)
        if resume and store.path.exists():
            lines, good = read_lines(store.path)
            header = lines[0] if lines and lines[0].get("type") == "settings" else None
            if header is None:
                raise fail("out", f"a {STORE} that starts with its settings", str(store.path))
            if header["hash"] != digest:
                raise fail("out", f"the settings of the runs in {store.path} (to resume them)",
                           f"different ones ({_differences(header['settings'], settings)})")
            with store.path.open("r+b") as stream:
                stream.truncate(good)
            done = [RunResult.from_json(line["run"]) for line in lines[1:]
                    if line.get("type") == "run" and line.get("hash") == digest]
            return store, done
        out.mkdir(parents=True, exist_ok=True)
        for name in (STORE, *REPORT_FILES):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / PREDICTIONS, ignore_errors=True)
        store._write({"type": "settings", "format": FORMAT, "hash": digest, "settings": settings})
        return store, []

    def _write(self, line: dict[str, Any]) -> None:
        # One write of a whole line, flushed to disk: a kill leaves at most a cut last line,
        # which resume drops.
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(line) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def append(self, result: RunResult) -> None:
        self._write({"type": "run", "hash": self.digest, "run": result.to_json()})

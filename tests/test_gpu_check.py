"""benchmarks/gpu_check.sh --dry-run: every step it would take on a lent GPU machine, nothing run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    out, venv = tmp_path / "out", tmp_path / "venv"
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "VENV": str(venv), "BUDGET_S": "470"},
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    names = [line.split()[1] for line in steps]
    assert names == ["venv", "install-torch", "pin-torch", "install-peers", "install-labelsmooth",
                     "cuda-available", "pytest-cuda", "benchmark", "report"]
    text = "\n".join(steps)
    for expected in ("liger-kernel", "cut-cross-entropy", "-m pytest -m cuda", "run.py --device cuda",
                     f"--out {out}/gpu-results.json", f"> '{out}/gpu-results.md'"):
        assert expected in text
    # Every step is bounded, and the limits fit the budget's 8 minutes.
    limits = [int(line.split("(at most ")[1].split(" s)")[0]) for line in steps]
    assert all(0 < limit <= 470 for limit in limits)
    assert not out.exists() and not venv.exists()

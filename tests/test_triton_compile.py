"""The Triton kernels compile for a Hopper GPU (sm_90) without one, within a block's shared memory.

``benchmarks/triton_compile_check.py`` takes every kernel variant through
Triton's compiler down to a cubin (ptxas ships with Triton's wheel) and fails
on a stage the installed Triton rejects or on more shared memory than an
H100/H200 block may use, which Triton would refuse to launch there. It runs in
a child without ``TRITON_INTERPRET`` (this suite's processes have it set).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 12 s of compiling
def test_every_kernel_compiles_for_sm90_within_its_shared_memory():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_compile_check.py")],
                            capture_output=True, text=True, env=env, timeout=600)  # a hang guard only
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(lines) == 12 and "0 failed or over" in result.stdout  # 2 kernels x 3 dtypes x 2 variants

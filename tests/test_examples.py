"""The quick-start example runs and prints what it claims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_matches_pytorch_and_restores_targets():
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0].split()
    assert first[1] == first[-1]  # labelsmooth.cross_entropy equals torch's label_smoothing=0.1
    assert out.rstrip().endswith("targets restored: True")

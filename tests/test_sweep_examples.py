"""The sweep examples end to end: every job writes a record and ``labelsmooth compare --runs`` reads them.

Both run as scripts in a child process (Hydra's multirun and Ray Tune each own their process), on a
grid of two alphas and one seed; Ray stays on 127.0.0.1 with 2 CPUs and is shut down by the script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labelsmooth.experiments import read_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": path}, timeout=400)  # a hang guard only
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _check(records: Path, report: Path) -> None:
    names = sorted(p.name for p in records.iterdir())
    assert names == ["alpha0.1_seed0.npz", "alpha0_seed0.npz"]
    first, second = (read_run(records / name) for name in names)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)  # one test set for every job
    document = json.loads((report / "metrics.json").read_text())
    assert [(run["alpha"], run["seed"]) for run in document["runs"]] == [(0.0, 0), (0.1, 0)]
    assert all(run["temperature_ok"] for run in document["runs"])


@pytest.mark.slow  # Hydra's multirun, two jobs, then the comparison: about 20 s on 2 cores
def test_hydra_sweep_writes_one_record_per_job(tmp_path):
    pytest.importorskip("hydra")
    records = tmp_path / "records"
    _run([str(EXAMPLES / "hydra_sweep" / "train.py"), "-m", "alpha=0,0.1", "seed=0", f"records={records}"],
         tmp_path)
    report = tmp_path / "report"
    _run(["-m", "labelsmooth", "compare", "--runs", str(records), "--out", str(report)], tmp_path)
    _check(records, report)


@pytest.mark.slow  # Ray Tune starts a local Ray and runs two trials: about a minute on 2 busy cores
def test_ray_tune_sweep_writes_one_record_per_trial_and_compares(tmp_path):
    pytest.importorskip("ray.tune")
    _run([str(EXAMPLES / "ray_tune_sweep.py"), "--out", str(tmp_path), "--seeds", "0"], tmp_path)
    _check(tmp_path / "records", tmp_path / "report")

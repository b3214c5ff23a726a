"""``compare_runs`` on run records of ImageNet validation size: wall time and peak memory.

Writes synthetic records (test 50,000 x 1,000 and val 10,000 x 1,000 float32 logits, the labels shared by
every run) for two alphas and 1 or 3 seeds into a temporary folder, then times ``compare_runs`` on them in a fresh
process and reports its peak resident memory (``ru_maxrss`` of that process, which includes torch's import).

    python benchmarks/compare_runs.py --seeds 1 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEST, VAL, CLASSES = 50_000, 10_000, 1_000
CHILD = """
import json, resource, sys, time
from labelsmooth.experiments import compare_runs
started = time.perf_counter()
result = compare_runs(sys.argv[1])
seconds = time.perf_counter() - started
kinds = sorted({str(c["interval"]) for c in result.comparisons})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak, "runs": len(result.runs), "intervals": kinds}))
"""


def logits_for(labels: np.ndarray, rng: np.random.Generator, skill: float) -> np.ndarray:
    """Logits whose true class is raised by ``skill`` (about 70-80% top-1 at the values used)."""
    z = rng.standard_normal((len(labels), CLASSES), dtype=np.float32) * 2.0
    z[np.arange(len(labels)), labels] += skill
    return z


def write_records(folder: Path, seeds: int) -> None:
    rng = np.random.default_rng(0)
    test_labels, val_labels = rng.integers(0, CLASSES, TEST), rng.integers(0, CLASSES, VAL)
    for alpha, skill in ((0.0, 6.0), (0.1, 6.3)):
        for seed in range(seeds):
            test_logits = logits_for(test_labels, rng, skill)
            np.savez(folder / f"alpha{alpha}_seed{seed}.npz", test_logits=test_logits,
                     test_labels=test_labels, val_logits=logits_for(val_labels, rng, skill),
                     val_labels=val_labels, meta=json.dumps({"alpha": alpha, "seed": seed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    for seeds in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            write_records(Path(folder), seeds)
            written = time.perf_counter() - started
            done = subprocess.run([sys.executable, "-c", CHILD, folder], capture_output=True, text=True,
                                  check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
            print(f"seeds per alpha {seeds}: compare_runs {measured['seconds']:.1f} s, peak RSS "
                  f"{measured['peak_rss_gb']:.2f} GB, {measured['runs']} runs, intervals "
                  f"{measured['intervals']} (records written in {written:.0f} s; load average {load})")


if __name__ == "__main__":
    main()

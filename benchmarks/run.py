"""Forward+backward time and peak memory of labelsmooth against PyTorch, dense targets and timm.

Run from the repository root (timm is a benchmark-only dependency)::

    python benchmarks/run.py --out benchmarks/results.json          # full run
    python benchmarks/run.py --quick --out /tmp/quick.json          # smoke run

Method:
* time: per case, all providers run interleaved (provider A, B, C, then A, B,
  C again, ...) in this one process after a warm-up on a tiny input; the
  median of ``repeats`` wall-clock runs of ``loss_fn(inputs).backward()``
  (gradients set to None before each run, untimed).
* memory: each (case, provider) runs once in a fresh subprocess; the peak
  growth is the peak resident set size (``VmHWM``, reset just before) during
  forward+backward minus the resident set size just before it (inputs already
  allocated, warm-up done). It includes the gradients the run leaves behind
  (e.g. ``logits.grad``) and allocator slack; it is process-wide, so it is an
  upper bound on what the loss itself allocated.
* floor: the time to read the logits twice and write the gradient once at the
  measured copy bandwidth (best of 5 copies of 256 MiB into a touched buffer;
  bandwidth counts the bytes read plus the bytes written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import providers as pv
import report

ROOT = Path(__file__).resolve().parent.parent


def copy_bandwidth(megabytes: int = 256) -> float:
    """Bytes per second read plus written by a large ``copy_`` (best of 5)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.zeros_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def time_case(case: pv.Case) -> dict[str, dict[str, float]]:
    fns = pv.providers_for(case)
    small = pv.make_inputs(case.small())
    for fn in fns.values():
        pv.step(fn, small)
        pv.reset(small, None)
    inputs = pv.make_inputs(case)
    pristine = {"logits": inputs["logits"].detach().clone()} if "logits" in inputs else None
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(case.repeats):
        for name, fn in fns.items():
            pv.reset(inputs, pristine if name.endswith("_inplace") else None)
            start = time.perf_counter()
            pv.step(fn, inputs)
            runs[name].append(time.perf_counter() - start)
    pv.reset(inputs, None)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs": len(t)}
        for name, t in runs.items()
    }


def _status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    # Linux >= 4.0: writing 5 resets VmHWM to the current RSS. (getrusage's
    # ru_maxrss cannot be used: it keeps the parent's peak across fork/exec.)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(case_name: str, provider: str, quick: bool) -> None:
    """Subprocess body: one forward+backward, print the peak RSS growth as JSON."""
    case = next(c for c in pv.cases(quick) if c.name == case_name)
    fn = pv.providers_for(case)[provider]
    small = pv.make_inputs(case.small())
    pv.step(fn, small)
    del small
    inputs = pv.make_inputs(case)
    _reset_peak()
    before = _status_bytes("VmRSS")
    peak_before = _status_bytes("VmHWM")
    pv.step(fn, inputs)
    peak_after = _status_bytes("VmHWM")
    print(json.dumps({"growth_bytes": peak_after - before, "rss_before": before,
                      "peak_before": peak_before, "peak_after": peak_after}))


def memory_case(case: pv.Case, quick: bool) -> dict[str, dict[str, int]]:
    out = {}
    for provider in pv.providers_for(case):
        command = [sys.executable, __file__, "--memory-child", case.name, provider]
        command += ["--quick"] if quick else []
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        out[provider] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, object]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "commit": _commit(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "loadavg_at_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--memory-child", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.quick)
        return
    results: dict[str, object] = {"machine": machine(), "bandwidth_bytes_per_s": copy_bandwidth(),
                                  "cases": []}
    bandwidth = float(results["bandwidth_bytes_per_s"])  # type: ignore[arg-type]
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    for case in pv.cases(args.quick):
        if args.only not in case.name:
            continue
        started = time.perf_counter()
        floor = None if case.kind == "linear" else 3 * case.logits_bytes() / bandwidth
        entry = {"name": case.name, "kind": case.kind, "shape": case.shape, "dtype": case.dtype,
                 "repeats": case.repeats, "floor_s": floor, "time": time_case(case),
                 "memory": memory_case(case, args.quick)}
        results["cases"].append(entry)  # type: ignore[union-attr]
        print(f"{case.name}: {time.perf_counter() - started:.0f} s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    results["machine"]["loadavg_at_end"] = os.getloadavg()  # type: ignore[index]
    args.out.write_text(json.dumps(results, indent=1))
    print(report.targets(results))
    print(report.table(results))


if __name__ == "__main__":
    main()

"""Render a ``benchmarks/run.py`` JSON result as Markdown: the table and the issue's targets.

    python benchmarks/report.py benchmarks/results.json > /tmp/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _baseline(case: dict[str, Any]) -> str:
    return "torch_linear_then_ce" if case["kind"] == "linear" else "torch_label_smoothing"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| case | provider | time (s), median | x PyTorch | peak growth (MiB) | x PyTorch | x floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        base = _baseline(case)
        t0 = case["time"][base]["median_s"]
        m0 = case["memory"][base]["growth_bytes"]
        for provider, timing in case["time"].items():
            seconds = timing["median_s"]
            growth = case["memory"][provider]["growth_bytes"]
            floor = f"{seconds / case['floor_s']:.1f}" if case["floor_s"] else "-"
            lines.append(
                f"| {case['name']} | {provider} | {seconds:.3f} | {seconds / t0:.2f} | "
                f"{growth / 2**20:.0f} | {growth / m0:.2f} | {floor} |"
            )
    return "\n".join(lines)


def _ratio(case: dict[str, Any], provider: str, base: str, what: str) -> float:
    if what == "time":
        return float(case["time"][provider]["median_s"] / case["time"][base]["median_s"])
    return float(case["memory"][provider]["growth_bytes"] / case["memory"][base]["growth_bytes"])


def targets(results: dict[str, Any]) -> str:
    """The issue's targets, each with the measured number and met / missed."""
    by_name = {case["name"]: case for case in results["cases"]}
    checks: list[tuple[str, str, str, str, str, float]] = [
        # (description, case, provider, baseline, what, bound)
        ("time <= 0.3x PyTorch label_smoothing", "ce-4096x32000-float32", "labelsmooth",
         "torch_label_smoothing", "time", 0.3),
        ("peak growth <= 0.4x PyTorch", "ce-4096x32000-float32", "labelsmooth",
         "torch_label_smoothing", "memory", 0.4),
        ("inplace_backward peak growth <= 0.1x PyTorch", "ce-4096x32000-float32",
         "labelsmooth_inplace", "torch_label_smoothing", "memory", 0.1),
        ("(8192, 1000): no slower than PyTorch", "ce-8192x1000-float32", "labelsmooth",
         "torch_label_smoothing", "time", 1.0),
        ("segmentation: no slower than PyTorch", "seg-8x150x128x128-float32", "labelsmooth",
         "torch_label_smoothing", "time", 1.0),
        ("alpha=0.1 vs alpha=0 within 3%", "ce-4096x32000-float32", "labelsmooth",
         "labelsmooth_alpha0", "time", 1.03),
        ("linear: peak growth <= 0.15x linear-then-CE", "linear-4096x1024x32000-float32",
         "labelsmooth_linear", "torch_linear_then_ce", "memory", 0.15),
        ("linear: time <= 1.1x linear-then-CE", "linear-4096x1024x32000-float32",
         "labelsmooth_linear", "torch_linear_then_ce", "time", 1.1),
    ]
    lines = ["| target | case | measured | met |", "|---|---|---|---|"]
    for text, name, provider, base, what, bound in checks:
        if name not in by_name:
            lines.append(f"| {text} | {name} | not run | - |")
            continue
        value = _ratio(by_name[name], provider, base, what)
        lines.append(f"| {text} | {name} | {value:.2f}x | {'yes' if value <= bound else 'NO'} |")
    for name, case in by_name.items():
        if case["kind"] == "ce" and case["shape"][1] > 10_000 and case["floor_s"]:
            factor = case["time"]["labelsmooth"]["median_s"] / case["floor_s"]
            met = "yes" if factor <= 2 else "NO"
            lines.append(f"| within 2x of the bandwidth floor | {name} | {factor:.1f}x floor | {met} |")
    return "\n".join(lines)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    machine = results["machine"]
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
          f"({machine['cpu_capability']}), {machine['torch_threads']} threads; commit {machine['commit']}; "
          f"{machine['date_utc']} UTC; load average at start {machine['loadavg_at_start']}, "
          f"at end {machine.get('loadavg_at_end')}; copy bandwidth "
          f"{results['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (read + write).\n")
    print(targets(results))
    print()
    print(table(results))


if __name__ == "__main__":
    main()

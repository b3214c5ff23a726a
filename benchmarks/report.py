"""Render a ``benchmarks/run.py`` JSON result as Markdown: targets, idle and busy tables, latency.

    python benchmarks/report.py benchmarks/results.json > /tmp/tables.md

Ratios are of medians from the same run. "x compiled" divides by compiled
PyTorch (``torch.compile`` of ``F.cross_entropy(label_smoothing=0.1)``, or of
linear then cross-entropy), the peer the issue's targets are against; "x eager"
by eager PyTorch, the old column.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20


@dataclass(frozen=True)
class Target:
    """``provider``'s time (per mode) or peak growth over ``baseline``'s, at most ``bound``."""

    text: str
    kinds: tuple[str, ...]
    provider: str
    baseline: str
    what: str
    bound: float


CE_KINDS = ("ce", "seg")
TARGETS = (
    Target("eager `cross_entropy(alpha=0.1)` time <= 0.8x compiled torch", CE_KINDS, "labelsmooth",
           "torch_compiled", "time", 0.8),
    Target("inside `torch.compile(fullgraph=True)` time <= 1.0x compiled torch", CE_KINDS,
           "labelsmooth_compiled", "torch_compiled", "time", 1.0),
    Target("peak growth <= 1.0x compiled torch", CE_KINDS, "labelsmooth", "torch_compiled", "memory", 1.0),
    Target("inside `torch.compile`: peak growth <= 1.0x compiled torch", CE_KINDS, "labelsmooth_compiled",
           "torch_compiled", "memory", 1.0),
    Target("`inplace_backward=True` peak growth <= 0.05x compiled torch", CE_KINDS, "labelsmooth_inplace",
           "torch_compiled", "memory", 0.05),
    Target("smoothing's own cost (alpha 0.1 / alpha 0) <= 1.03x", CE_KINDS, "labelsmooth",
           "labelsmooth_alpha0", "time", 1.03),
    Target("`linear_cross_entropy` peak growth <= 0.15x eager linear+CE", ("linear",),
           "labelsmooth_linear", "torch_linear_then_ce", "memory", 0.15),
    Target("`linear_cross_entropy` time <= 1.0x compiled linear+CE", ("linear",), "labelsmooth_linear",
           "torch_compiled_linear_ce", "time", 1.0),
    Target("`linear_cross_entropy` (alpha 0.1) time <= 1.0x `F.linear_cross_entropy` chunked, alpha 0",
           ("linear",), "labelsmooth_linear", "torch_lce_chunked_alpha0", "time", 1.0),
    Target("`linear_cross_entropy` (alpha 0.1) peak growth <= 1.0x `F.linear_cross_entropy` chunked, "
           "alpha 0", ("linear",), "labelsmooth_linear", "torch_lce_chunked_alpha0", "memory", 1.0),
)


def seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 0.1 else f"{value:.3f} s"


def _value(case: dict[str, Any], provider: str, what: str, mode: str) -> float | str:
    """The median time or peak growth, or why there is none."""
    if provider in case["errors"]:
        return "error"
    if provider in case["skipped"]:
        return "skipped"
    cell = case["time"].get(mode, {}).get(provider) if what == "time" else case["memory"].get(provider)
    if cell is None:
        return "not run"
    if "error" in cell or "skipped" in cell:
        return "error" if "error" in cell else "skipped"
    return float(cell["median_s"] if what == "time" else cell["growth_bytes"])


def ratio_value(case: dict[str, Any], provider: str, baseline: str, what: str,
                mode: str = "idle") -> tuple[float | None, str]:
    """The ratio and its cell text, or None and why there is none."""
    ours, base = _value(case, provider, what, mode), _value(case, baseline, what, mode)
    if isinstance(ours, str):
        return None, ours
    if isinstance(base, str):
        return None, f"{base} ({baseline})"
    return (ours / base, f"{ours / base:.2f}") if base > 0 else (None, "-")


def ratio(case: dict[str, Any], provider: str, baseline: str, what: str, mode: str = "idle") -> str:
    return ratio_value(case, provider, baseline, what, mode)[1]


def _amount(value: float | str, what: str) -> str:
    if isinstance(value, str):
        return value
    return seconds(value) if what == "time" else f"{value / MIB:.1f} MiB"


def _target_rows(case: dict[str, Any], target: Target, modes: list[str]) -> list[str]:
    """One row per mode (time) or one row (memory): ratio to 3 decimals, both amounts, met."""
    rows = []
    for mode in modes if target.what == "time" else ["-"]:
        timing_mode = "idle" if mode == "-" else mode
        value, text = ratio_value(case, target.provider, target.baseline, target.what, timing_mode)
        if value is not None:
            amounts = [_amount(_value(case, p, target.what, timing_mode), target.what)
                       for p in (target.provider, target.baseline)]
            text = f"{value:.3f}x ({amounts[0]} vs {amounts[1]})"
            met = "yes" if value <= target.bound else "**NO**"
        else:
            met = "**NO**" if text in ("error", "not run") else "-"
        rows.append(f"| {target.text} | {case['name']} | {mode} | {text} | {met} |")
    return rows


def targets(results: dict[str, Any]) -> str:
    """The issue's targets, each with the measured ratio and met / missed, per case and mode."""
    lines = ["| target | case | mode | measured | met |", "|---|---|---|---|---|"]
    for case in results["cases"]:
        if case["kind"] in CE_KINDS:
            error = case["errors"].get("labelsmooth_compiled")
            met = "**NO**: " + error if error else "yes"
            lines.append(f"| compiles with `fullgraph=True` (no graph break) | {case['name']} | - | - | "
                         f"{met} |")
        for target in TARGETS:
            if case["kind"] in target.kinds:
                lines += _target_rows(case, target, results["modes"])
    return "\n".join(lines)


def _time_cells(case: dict[str, Any], provider: str, mode: str) -> str:
    timing = case["time"].get(mode, {}).get(provider)
    if timing is None:
        return ("error" if provider in case["errors"] else "not run") + " | - | - | -"
    floor = f"{timing['median_s'] / case['floor_s']:.1f}" if case["floor_s"] else "-"
    spread = f"{seconds(timing['q20_s'])}-{seconds(timing['q80_s'])}"
    return (f"{seconds(timing['median_s'])} ({spread}) | "
            f"{ratio(case, provider, case['compiled_baseline'], 'time', mode)} | "
            f"{ratio(case, provider, case['eager_baseline'], 'time', mode)} | {floor}")


def _memory_cells(case: dict[str, Any], provider: str) -> str:
    growth = _value(case, provider, "memory", "idle")
    shown = f"{growth / MIB:.0f}" if isinstance(growth, float) else growth
    return f"{shown} | {ratio(case, provider, case['compiled_baseline'], 'memory')} |"


def _slowdown_cell(case: dict[str, Any], provider: str, mode: str) -> str:
    busy, idle = (case["time"].get(m, {}).get(provider) for m in (mode, "idle"))
    return f"{busy['median_s'] / idle['median_s']:.2f} |" if busy and idle else "- |"


def time_table(results: dict[str, Any], mode: str) -> str:
    """Median time (20-80% quantiles) and ratios; the first mode's table adds peak growth, busy x idle."""
    with_memory = mode == results["modes"][0]
    with_slowdown = mode == "busy" and "idle" in results["modes"]
    header = "| case | provider | time, median (q20-q80) | x compiled | x eager | x floor |"
    header += " peak growth (MiB) | x compiled |" if with_memory else ""
    header += " x own idle |" if with_slowdown else ""
    lines = [header, "|---" * header.count(" |") + "|"]
    for case in results["cases"]:
        for provider in case["providers"]:
            if provider in case["skipped"]:
                continue
            row = f"| {case['name']} | {provider} | {_time_cells(case, provider, mode)} |"
            row += f" {_memory_cells(case, provider)}" if with_memory else ""
            row += f" {_slowdown_cell(case, provider, mode)}" if with_slowdown else ""
            lines.append(row)
    return "\n".join(lines)


def latency_table(results: dict[str, Any]) -> str:
    """First call (compile included) in a fresh process, cold and warm Inductor cache."""
    lines = ["| case | provider | first call, cold cache | first call, warm cache | steady (idle median) |",
             "|---|---|---|---|---|"]
    for case in results["cases"]:
        for provider, runs in case["latency"].items():
            cells = []
            for run in (runs["cold"], runs["warm"]):
                cells.append(seconds(run["first_call_s"]) if "first_call_s" in run else
                             "error: " + run.get("error", run.get("skipped", "?")))
            steady = case["time"].get("idle", {}).get(provider)
            lines.append(f"| {case['name']} | {provider} | {cells[0]} | {cells[1]} | "
                         f"{seconds(steady['median_s']) if steady else '-'} |")
    return "\n".join(lines)


def problems(results: dict[str, Any]) -> str:
    """Every error cell and skipped provider, with its message."""
    lines = []
    for case in results["cases"]:
        for provider, message in case["errors"].items():
            lines.append(f"- {case['name']} / {provider}: error: {message}")
        for provider, cell in case["memory"].items():
            if "error" in cell:
                lines.append(f"- {case['name']} / {provider}: memory probe error: {cell['error']}")
        skipped = sorted(set(case["skipped"]))
        if skipped:
            reasons = "; ".join(f"{p} ({case['skipped'][p]})" for p in skipped)
            lines.append(f"- {case['name']}: skipped {reasons}")
        for provider, note in case.get("notes", {}).items():
            lines.append(f"- {case['name']} / {provider}: {note}")
    return "\n".join(lines) or "none"


def _load(loadavg: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in loadavg) if loadavg else "?"


def case_table(results: dict[str, Any]) -> str:
    """Wall time of each case and the load average (1, 5, 15 min) around it: a busy neighbour shows here."""
    lines = ["| case | repeats | wall time | load average before | after |", "|---|---|---|---|---|"]
    for case in results["cases"]:
        lines.append(f"| {case['name']} | {case['repeats']} | {case['seconds']:.0f} s | "
                     f"{_load(case['loadavg_before'])} | {_load(case['loadavg_after'])} |")
    return "\n".join(lines)


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    gpu = f"; GPU {m['gpu']} (CUDA {m['cuda']})" if m.get("device") == "cuda" else ""
    dirty = " (with uncommitted changes in src/)" if m.get("uncommitted_src_changes") else ""
    if m.get("src_digest_at_end") not in (None, m.get("src_digest_at_start")):
        dirty += " (**src/ changed during the run**)"
    return (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['cpu_capability']}), "
            f"{m['torch_threads']} threads{gpu}; labelsmooth backend {m.get('labelsmooth_backend')}; "
            f"commit {m['commit']}{dirty}; {m['date_utc']} UTC; load average at start "
            f"{_load(m['loadavg_at_start'])}, at end {_load(m.get('loadavg_at_end'))}; copy bandwidth "
            f"{results['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (read + write)"
            f"{'' if results.get('complete') else '; INCOMPLETE run'}.")


def render(results: dict[str, Any]) -> str:
    parts = [header(results), "## Targets", targets(results)]
    for mode in results["modes"]:
        title = "Idle machine" if mode == "idle" else "Busy machine (one extra process spinning on one core)"
        parts += [f"## {title}", time_table(results, mode)]
    parts += ["## First-call latency", latency_table(results)]
    parts += ["## Errors, skips and notes", problems(results), "## Cases", case_table(results)]
    return "\n\n".join(parts)


def main() -> None:
    print(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()

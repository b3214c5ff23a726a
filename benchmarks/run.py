"""Forward+backward time, peak memory and first-call latency of labelsmooth against its peers.

Run from the repository root::

    python benchmarks/run.py                      # idle then busy; writes benchmarks/results.json
    python benchmarks/run.py --quick              # smoke run, small shapes (output in the temp dir)
    python benchmarks/run.py --device cuda        # on a GPU; writes benchmarks/results-cuda.json
    python benchmarks/report.py benchmarks/results.json    # the tables again, from the JSON

``--mode idle|busy|both`` (``--busy`` = ``--mode busy``), ``--only NAME``
(cases whose name contains NAME), ``--latency auto|none|NAME,...`` (cases
whose first-call latency is measured; "auto": those marked in
``providers.cases``), ``--repeats N``. Progress goes to stderr, the Markdown
report to stdout; the JSON is rewritten (atomically) after every case.
Timm and Liger-Kernel are optional peers, skipped with the reason when they
cannot run; a provider that fails (say, ``torch.compile(fullgraph=True)`` of
ours) is an error cell, and the run goes on.

Method:
* time: per case, every provider is built and called once at the case's
  shape (untimed: compiles what compiles), then all run interleaved (A, B,
  C, then C, A, B, ...: an order shuffled anew for each repeat, seeded by
  the repeat's number) in this one process. In a fixed order each provider
  always follows the same one: the first always followed the last
  ("dense_targets", whose 187 MB of buffers evict the inputs from the
  caches), which cost it a third of its time at (8192, 1000). The median of
  ``repeats`` runs of ``loss_fn(inputs).backward()`` (gradients set to None
  before each run, untimed; logits a provider overwrites restored, untimed).
  On CUDA each run is bracketed by ``torch.cuda.synchronize()``.
  ``torch._dynamo.reset()`` starts each case, so every compiled provider
  compiles for that shape alone (static shapes, as in a fixed-shape training loop).
* busy: the same loop again while one extra process spins a pure-Python
  loop (one core's worth, not pinned); started just before the timed loop of
  each case and killed right after it.
* memory (CPU): each (case, provider) runs in a fresh subprocess: one call
  at the case's shape (which compiles), then the peak resident set size
  (``VmHWM``, reset through ``/proc/self/clear_refs``) during a second
  forward+backward minus the resident set size just before it. Process-wide,
  so it counts the gradients left behind and allocator slack. Before the
  second call glibc's mmap threshold is fixed at its 128 KiB default and the
  heap trimmed, so that blocks the first call freed are not reused unseen.
  On CUDA: ``torch.cuda.max_memory_allocated()`` during one call minus
  ``memory_allocated()`` before it, in the timing process.
* first-call latency: for the providers that may compile, the first call at
  the case's shape (compile included; imports and inputs not) in a fresh
  process with an empty ``TORCHINDUCTOR_CACHE_DIR`` (cold), then in another
  fresh process with that cache dir reused (warm). The cold process also
  gives the provider's memory.
* floor: the time to read the logits twice and write the gradient once at
  the measured copy bandwidth (best of 5 copies of 256 MiB).
* machine: CPU, cores, torch, commit (and whether src/ has uncommitted
  changes, and a digest of src/ at start and end: the report flags a run
  whose code changed under it), date, load average at start and end and
  around each case (it counts this run itself, about the number of torch
  threads, and the spinner).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import providers as pv
import report

import labelsmooth

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.perf_counter()
SPIN = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(10**6):\n        pass\n"


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_step(fn: pv.Loss, inputs: dict[str, torch.Tensor], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    pv.step(fn, inputs)
    sync(device)
    return time.perf_counter() - start


def _error(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


@contextlib.contextmanager
def spinner() -> Iterator[None]:
    """One extra process spinning on one core; it also exits by itself if this one dies."""
    process = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        process.kill()
        process.wait()


def copy_bandwidth(device: str, megabytes: int = 256) -> float:
    """Bytes per second read plus written by a large ``copy_`` (best of 5)."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.zeros_like(src)
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def _pristine(inputs: dict[str, torch.Tensor], provider: pv.Provider) -> torch.Tensor | None:
    return inputs["logits"].detach().clone() if provider.mutates_logits else None


def build_all(case: pv.Case, inputs: dict[str, torch.Tensor], device: str,
              entry: dict[str, Any]) -> dict[str, pv.Loss]:
    """Build each provider and call it once at the case's shape; record skips and errors."""
    fns = {}
    for provider in pv.providers_for(case):
        pristine = _pristine(inputs, provider)
        try:
            fn = provider.build(case, device)
            log(f"{case.name}: first call of {provider.name}")
            pv.step(fn, inputs)
            fns[provider.name] = fn
        except pv.Unavailable as reason:
            entry["skipped"][provider.name] = str(reason)
        except Exception as error:
            entry["errors"][provider.name] = _error(error)
            log(f"{case.name}: {provider.name} failed: {entry['errors'][provider.name]}")
        finally:  # also after a failure halfway through overwriting the logits
            pv.reset(inputs, pristine)
    return fns


def _stats(seconds: list[float]) -> dict[str, float]:
    q20, _, _, q80 = statistics.quantiles(seconds, n=5, method="inclusive")
    return {"median_s": statistics.median(seconds), "q20_s": q20, "q80_s": q80,
            "min_s": min(seconds), "max_s": max(seconds), "runs": len(seconds)}


def time_loop(case: pv.Case, fns: dict[str, pv.Loss], inputs: dict[str, torch.Tensor], device: str,
              repeats: int, entry: dict[str, Any]) -> dict[str, dict[str, float]]:
    pristine = {name: _pristine(inputs, pv.provider(case, name)) for name in fns}
    runs: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for repeat in range(repeats):
        random.Random(repeat).shuffle(order)  # no provider always follows the same one
        for name in order:
            fn = fns[name]
            if name in entry["errors"]:
                continue
            pv.reset(inputs, pristine[name])
            try:
                runs[name].append(timed_step(fn, inputs, device))
            except Exception as error:
                entry["errors"][name] = _error(error)
        log(f"{case.name}: repeat {repeat + 1}/{repeats} done")
    pv.reset(inputs, None)
    return {name: _stats(seconds) for name, seconds in runs.items() if name not in entry["errors"]}


def _peak_growth(fn: pv.Loss, inputs: dict[str, torch.Tensor], device: str) -> dict[str, float]:
    """Time one call and measure the memory it grows by (RSS on CPU, the CUDA allocator on CUDA)."""
    if device == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        seconds = timed_step(fn, inputs, device)
        return {"growth_bytes": torch.cuda.max_memory_allocated() - before, "call_s": seconds}
    _reset_peak()
    before = _status_bytes("VmRSS")
    seconds = timed_step(fn, inputs, device)
    return {"growth_bytes": _status_bytes("VmHWM") - before, "rss_before": before, "call_s": seconds}


def time_case(case: pv.Case, device: str, modes: list[str], repeats: int,
              entry: dict[str, Any]) -> None:
    torch._dynamo.reset()
    inputs = pv.make_inputs(case, device)
    fns = build_all(case, inputs, device, entry)
    if device == "cuda":
        for name, fn in fns.items():
            pristine = _pristine(inputs, pv.provider(case, name))
            pv.reset(inputs, pristine)
            entry["memory"][name] = _peak_growth(fn, inputs, device)
            pv.reset(inputs, pristine)
    for mode in modes:
        context = spinner() if mode == "busy" else contextlib.nullcontext()
        log(f"{case.name}: timing, {mode}")
        with context:
            entry["time"][mode] = time_loop(case, fns, inputs, device, repeats, entry)


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


def _fix_malloc_threshold() -> None:
    """glibc: return the heap the first call freed, and keep every block >= 128 KiB mapped.

    glibc raises its mmap threshold (up to 32 MiB) when a large block is freed,
    and keeps up to twice that in the heap: blocks the first call freed would
    be reused unseen by the measured call. Fixing the threshold at glibc's
    default and trimming makes every large allocation of the measured call
    show in the resident set. Elsewhere (no mallopt) a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)


def probe_child(case_name: str, name: str, quick: bool, device: str, first_call_only: bool) -> None:
    """Subprocess body: time the first call, then measure the memory of a second; print JSON."""
    case = next(c for c in pv.cases(quick, device) if c.name == case_name)
    provider = pv.provider(case, name)
    inputs = pv.make_inputs(case, device)
    pristine = _pristine(inputs, provider)
    try:
        fn = provider.build(case, device)
        result: dict[str, Any] = {"first_call_s": timed_step(fn, inputs, device)}
        if not first_call_only:
            pv.reset(inputs, pristine)
            _fix_malloc_threshold()
            result.update(_peak_growth(fn, inputs, device))
    except pv.Unavailable as reason:
        result = {"skipped": str(reason)}
    except Exception as error:
        result = {"error": _error(error)}
    print(json.dumps(result))


def run_probe(case: pv.Case, name: str, quick: bool, device: str, cache_dir: str | None,
              first_call_only: bool = False) -> dict[str, Any]:
    """Run :func:`probe_child` in a fresh process (with its own Inductor cache dir if given)."""
    command = [sys.executable, __file__, "--probe-child", case.name, name, "--device", device]
    command += ["--quick"] if quick else []
    command += ["--probe-first-call-only"] if first_call_only else []
    env = dict(os.environ)
    if cache_dir is not None:
        env.update(TORCHINDUCTOR_CACHE_DIR=cache_dir, TRITON_CACHE_DIR=os.path.join(cache_dir, "triton"))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    except subprocess.TimeoutExpired:
        return {"error": "probe subprocess timed out after 1200 s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"probe subprocess exited {done.returncode}: {tail[0]}"[:300]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def probe_case(case: pv.Case, quick: bool, device: str, latency: bool, entry: dict[str, Any]) -> None:
    """Memory (CPU) and first-call latency subprocesses for the providers that ran in this process."""
    for provider in pv.providers_for(case):
        if provider.name in entry["skipped"] or provider.name in entry["errors"]:
            continue
        if latency and provider.latency:
            log(f"{case.name}: first call of {provider.name}, cold and warm cache")
            with tempfile.TemporaryDirectory(prefix="labelsmooth-inductor-") as cache_dir:
                cold = run_probe(case, provider.name, quick, device, cache_dir)
                warm = run_probe(case, provider.name, quick, device, cache_dir, first_call_only=True)
            entry["latency"][provider.name] = {"cold": cold, "warm": warm}
            memory = cold
        elif device == "cpu":
            log(f"{case.name}: memory of {provider.name}")
            memory = run_probe(case, provider.name, quick, device, None)
        else:
            continue
        if device == "cpu":
            entry["memory"][provider.name] = memory


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def src_digest() -> str:
    """A digest of the library's sources, to tell a run whose code changed under it (shared trees)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine(device: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    kernel = None
    with contextlib.suppress(Exception):  # labelsmooth.kernels.backend(device), where this version has it
        kernel = str(labelsmooth.kernels.backend(device))
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": device,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_src_changes": _git("status", "--porcelain", "src") not in ("", "unknown"),
        "src_digest_at_start": src_digest(),
        "labelsmooth_backend": kernel,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "loadavg_at_start": os.getloadavg(),
    }
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write through a temporary file and rename, so a stopped run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(results, indent=1))
    os.replace(temporary, path)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results.json, "
                        "benchmarks/results-cuda.json on CUDA, the temp dir with --quick)")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mode", choices=("idle", "busy", "both"), default="both",
                        help="time on an idle machine, with one core kept busy, or both (default)")
    parser.add_argument("--busy", action="store_const", const="busy", dest="mode", help="= --mode busy")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--latency", default="auto", help="cases whose first-call latency is measured: "
                        "'auto' (those marked in providers.cases), 'none', or comma-separated name parts")
    parser.add_argument("--repeats", type=int, help="timed runs per provider (default: per case; "
                        "at least 20 on CUDA)")
    parser.add_argument("--probe-child", nargs=2, metavar=("CASE", "PROVIDER"), help=argparse.SUPPRESS)
    parser.add_argument("--probe-first-call-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA device "
                     "(torch.cuda.is_available() is False)")
    if args.repeats is not None and args.repeats < 2:
        parser.error(f"--repeats: expected an integer >= 2, got {args.repeats}")
    if args.out is None:
        name = "labelsmooth-bench-quick.json" if args.quick else None
        default = ROOT / "benchmarks" / ("results-cuda.json" if args.device == "cuda" else "results.json")
        args.out = Path(tempfile.gettempdir()) / name if name else default
    return args


def _wants_latency(case: pv.Case, selection: str) -> bool:
    if selection == "auto":
        return case.latency
    return selection != "none" and any(part and part in case.name for part in selection.split(","))


def new_entry(case: pv.Case, device: str, repeats: int, bandwidth: float) -> dict[str, Any]:
    return {
        "name": case.name, "kind": case.kind, "shape": case.shape, "dtype": case.dtype, "repeats": repeats,
        "floor_s": None if case.kind == "linear" else 3 * case.logits_bytes() / bandwidth,
        "providers": [p.name for p in pv.providers_for(case)],
        "compiled_baseline": pv.COMPILED_BASELINE[case.kind], "eager_baseline": pv.EAGER_BASELINE[case.kind],
        "loadavg_before": os.getloadavg(), "time": {}, "memory": {}, "latency": {}, "errors": {},
        "skipped": {}, "notes": pv.notes(case, device),
    }


def main() -> None:
    args = _arguments()
    if args.probe_child:
        case_name, provider = args.probe_child
        probe_child(case_name, provider, args.quick, args.device, args.probe_first_call_only)
        return
    modes = ["idle", "busy"] if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {"machine": machine(args.device), "modes": modes, "complete": False,
                               "bandwidth_bytes_per_s": copy_bandwidth(args.device), "cases": []}
    bandwidth = results["bandwidth_bytes_per_s"]
    log(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write); writing {args.out}")
    for case in pv.cases(args.quick, args.device):
        if args.only not in case.name:
            continue
        started = time.perf_counter()
        repeats = args.repeats or (max(case.repeats, 20) if args.device == "cuda" else case.repeats)
        entry = new_entry(case, args.device, repeats, bandwidth)
        time_case(case, args.device, modes, repeats, entry)
        probe_case(case, args.quick, args.device, _wants_latency(case, args.latency), entry)
        entry.update(loadavg_after=os.getloadavg(), seconds=time.perf_counter() - started)
        results["cases"].append(entry)
        write_json(args.out, results)
        log(f"{case.name}: {entry['seconds']:.0f} s")
    results["machine"].update(loadavg_at_end=os.getloadavg(), src_digest_at_end=src_digest())
    results["complete"] = True
    write_json(args.out, results)
    print(report.render(results))
    log(f"done; results in {args.out}")


if __name__ == "__main__":
    main()

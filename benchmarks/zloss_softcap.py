"""What z-loss and softcapping add to the fused kernel, side by side with plain smoothing.

Run from the repository root::

    python benchmarks/zloss_softcap.py            # (4096, 32000) float32, 15 rounds
    python benchmarks/zloss_softcap.py --rows 512 --classes 8000 --rounds 5

Method: ``cross_entropy(logits, targets, alpha=0.1, ...)`` forward+backward
(``"mean"``: the forward writes the gradient) on the ``"inductor"`` backend,
for plain smoothing, ``z_loss=1e-4``, ``softcap=30`` and both. Each variant is
compiled and run twice untimed, then the four run interleaved in this one
process, ``--rounds`` times; the table gives the median wall time (20th/80th
percentiles) and the median CPU time of the process (both threads), each as a
ratio to plain smoothing, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import labelsmooth as ls

VARIANTS = {
    "plain (alpha=0.1)": {},
    "z_loss=1e-4": {"z_loss": 1e-4},
    "softcap=30": {"softcap": 30.0},
    "z_loss=1e-4, softcap=30": {"z_loss": 1e-4, "softcap": 30.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    ls.kernels.set_backend("inductor")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(args.rows, args.classes, generator=generator) * 3
    targets = torch.randint(0, args.classes, (args.rows,), generator=generator)

    def step(options: dict[str, float]) -> None:
        leaf = logits.detach().requires_grad_()
        ls.cross_entropy(leaf, targets, alpha=0.1, **options).backward()

    for options in VARIANTS.values():
        step(options)
        step(options)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, options in VARIANTS.items():
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            step(options)
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    load_after = os.getloadavg()
    base_wall = statistics.median(wall["plain (alpha=0.1)"])
    base_cpu = statistics.median(cpu["plain (alpha=0.1)"])
    print(f"({args.rows}, {args.classes}) float32, fwd+bwd, {args.rounds} interleaved rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | wall median (20/80%) | vs plain | CPU median | vs plain |")
    print("| --- | --- | --- | --- | --- |")
    for name in VARIANTS:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        low, *_, high = statistics.quantiles(wall[name], n=5)
        print(f"| {name} | {1e3 * w:.0f} ms ({1e3 * low:.0f}/{1e3 * high:.0f}) | {w / base_wall:.3f}x "
              f"| {1e3 * c:.0f} ms | {c / base_cpu:.3f}x |")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI) before benchmarks/gpu_check.sh on a lent GPU machine that
# reaches no registry: downloads the peers pinned in benchmarks/gpu_peers.txt as wheels for the
# device's Python (CPython 3.12, x86-64 manylinux) into WHEEL_DIR (default: .whl in the repository
# root, which .gitignore ignores; the device tool's `carry: [".whl"]` takes it along).
# Their own needs (torch, triton) are on the device's image already: --no-deps, and the script
# prints each wheel's Requires-Dist so that a new pin's needs can be checked against that image.
#
# Usage: bash benchmarks/gpu_wheels.sh
# Environment: PYTHON (default python3, a Python with pip), WHEEL_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"
PEERS="$ROOT/benchmarks/gpu_peers.txt"

mkdir -p "$WHEEL_DIR"
# One version of each: two wheels of one package stop the whole install on the device.
rm -f "$WHEEL_DIR"/liger_kernel-*.whl "$WHEEL_DIR"/cut_cross_entropy-*.whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEEL_DIR" -r "$PEERS"

for wheel in "$WHEEL_DIR"/*.whl; do
    echo "$(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) needs:"
    "$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    needs = [line.split(":", 1)[1].strip() for line in wheel.read(name).decode().splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
print("   ", ", ".join(needs) or "nothing")
PY
done
echo "wheels in $WHEEL_DIR: $(du -sh "$WHEEL_DIR" | cut -f1) (the device tool carries at most 64 MiB in all)"

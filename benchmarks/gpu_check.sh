#!/usr/bin/env bash
# One check for a lent machine with an NVIDIA GPU and the package registries (issue 20):
#   1. a venv of its own with a CUDA build of torch (Triton comes with it), pytest, hypothesis,
#      liger-kernel and cut-cross-entropy (torch pinned to the build installed first);
#   2. pytest -m cuda: the parity tests on the GPU (Inductor's Triton path, the chunked path,
#      labelsmooth's own Triton kernels) against the same float64 references as on CPU;
#   3. benchmarks/run.py --device cuda, with Liger-Kernel (cross-entropy and fused linear CE,
#      smoothed) and Cut Cross-Entropy (alpha 0) as peers: JSON and a markdown table.
# Everything lands in the folder given as the argument, else $OUT, else ./gpu-check-out.
# Each step has a time limit and the whole run a budget (BUDGET_S, default 470 s, under
# 8 minutes); a step that fails or times out is reported and the next one still runs.
#
# Usage: benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#   --dry-run  print every step (command and time limit) without running anything.
# Environment: VENV (default /tmp/labelsmooth-gpu-venv), PYTHON (default python3),
#   TORCH_INDEX (default: PyPI, whose Linux wheels are CUDA builds), BUDGET_S.
set -u -o pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/gpu-check-out}}"
VENV="${VENV:-/tmp/labelsmooth-gpu-venv}"
PYTHON="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-470}"
INDEX_ARGS=()
if [[ -n "${TORCH_INDEX:-}" ]]; then
    INDEX_ARGS=(--index-url "$TORCH_INDEX")
fi
PY="$VENV/bin/python"
DEADLINE=$((SECONDS + BUDGET_S))
FAILED=()

log() { echo "[gpu_check $(date -u +%H:%M:%S) +${SECONDS}s] $*" >&2; }

# step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, time left); its output goes
# to the terminal and to OUT_DIR/NAME.log.
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    if ((DRY_RUN)); then
        echo "step $name (at most ${limit} s): $*"
        return 0
    fi
    if ((limit <= 0)); then
        log "$name: skipped, the ${BUDGET_S} s budget is spent"
        FAILED+=("$name (no time left)")
        return 1
    fi
    log "$name: start (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local status=${PIPESTATUS[0]}
    if ((status != 0)); then
        log "$name: exit status $status$( ((status == 124)) && echo ' (time limit)')"
        FAILED+=("$name (exit $status)")
    else
        log "$name: done"
    fi
    return "$status"
}

if ((DRY_RUN)); then
    echo "dry run: output folder $OUT_DIR, venv $VENV, budget ${BUDGET_S} s"
else
    mkdir -p "$OUT_DIR"
    command -v nvidia-smi >/dev/null && nvidia-smi | tee "$OUT_DIR/nvidia-smi.txt"
fi

step venv 60 "$PYTHON" -m venv "$VENV"
step install-torch 200 "$PY" -m pip install --quiet --progress-bar off "${INDEX_ARGS[@]}" torch numpy
# The peers pinned to the torch just installed, so that neither replaces it.
step pin-torch 20 bash -c "'$PY' -m pip freeze | grep -E '^(torch|triton)==' > '$VENV/constraints.txt'"
step install-peers 120 "$PY" -m pip install --quiet --progress-bar off -c "$VENV/constraints.txt" \
    pytest hypothesis liger-kernel cut-cross-entropy
step install-labelsmooth 60 "$PY" -m pip install --quiet --progress-bar off --no-deps -e "$ROOT"
step cuda-available 30 "$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
step pytest-cuda 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider --durations=10 \
    --junitxml="$OUT_DIR/pytest-cuda.xml" "$ROOT/tests/test_triton_linear.py" \
    "$ROOT/tests/test_kernels.py" "$ROOT/tests/test_linear_cross_entropy.py" "$ROOT/tests/test_z_loss_softcap.py"
# Whatever time is left: run.py writes the JSON after every case, so a cut run keeps its cases.
step benchmark 600 "$PY" "$ROOT/benchmarks/run.py" --device cuda --mode idle --latency none \
    --out "$OUT_DIR/gpu-results.json"
# The table from the JSON as it stands (a partial run says INCOMPLETE in its header).
step report 30 bash -c "'$PY' '$ROOT/benchmarks/report.py' '$OUT_DIR/gpu-results.json' > '$OUT_DIR/gpu-results.md'"

if ((DRY_RUN)); then
    exit 0
fi
if ((${#FAILED[@]})); then
    log "finished in ${SECONDS} s; failed: ${FAILED[*]}; logs in $OUT_DIR"
    exit 1
fi
log "finished in ${SECONDS} s; results in $OUT_DIR (gpu-results.json, gpu-results.md, pytest-cuda.xml)"

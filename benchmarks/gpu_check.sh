#!/usr/bin/env bash
# One bounded check for a lent machine with an NVIDIA GPU (issue 20), in one of two settings:
#   offline (chosen where $PYTHON already imports a torch that sees CUDA, as on this workplace's H200,
#     which reaches no package registry): that Python as it is, no venv; the peers pinned in
#     benchmarks/gpu_peers.txt installed with --no-index from the wheels in WHEEL_DIR (made where PyPI
#     is reachable by benchmarks/gpu_wheels.sh) into a folder of their own on PYTHONPATH; a peer whose
#     wheel is absent is said so, and its benchmark columns say "skipped";
#   online (registries reachable, no CUDA torch yet): a venv of its own with a CUDA build of torch, then
#     pytest, hypothesis, pytest-xdist and the peers from the registry, pinned to that torch.
# labelsmooth itself comes from $ROOT/src through PYTHONPATH in both (no build backend needed). Then:
#   1. pytest -m cuda on the Triton kernels' file, then (after the benchmark) on the parity files:
#      the GPU paths against the same float64 references as on CPU; JUnit XML for each;
#   2. benchmarks/run.py --device cuda, the issue's language-model cases first, with Liger-Kernel
#      (cross-entropy and fused linear CE, smoothed) and Cut Cross-Entropy (alpha 0) as peers;
#      it rewrites its JSON after every case, so a run cut by its limit keeps the cases it finished;
#   3. benchmarks/report.py: the markdown table from that JSON.
# Results, in the folder given as the argument, else $OUT, else ./gpu-check-out, five files at most
# (the device tool brings back eight): gpu-check.log (every step's output, the environment,
# nvidia-smi), pytest-triton.xml, pytest-cuda.xml, gpu-results.json, gpu-results.md.
# Each step has a time limit and the whole run a budget (BUDGET_S, default 470 s, under 8 minutes);
# a step that fails or runs out of time is reported and the next one still runs.
#
# Usage: benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#   --dry-run  print the setting, every step (command and time limit) and every skip; run nothing.
# Environment: GPU_CHECK_MODE (auto, the default, | offline | online), GPU_CHECK_STEPS (the checks to
#   run, comma-separated among pytest-triton, benchmark, pytest-cuda and report, say "pytest-cuda" for a
#   rerun of one with the whole budget; default all; the setup steps always run),
#   PYTHON (default python3), WHEEL_DIR (default $ROOT/.whl), SITE_DIR (where offline installs the
#   peers, default /tmp/labelsmooth-gpu-site), VENV (online, default /tmp/labelsmooth-gpu-venv),
#   TORCH_INDEX (online; default PyPI, whose Linux wheels are CUDA builds), BUDGET_S,
#   PYTEST_WORKERS (default 8; 0 runs pytest in one process).
set -u -o pipefail
shopt -s nullglob

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/gpu-check-out}}"
LOG="$OUT_DIR/gpu-check.log"
PYTHON="${PYTHON:-python3}"
MODE="${GPU_CHECK_MODE:-auto}"
STEPS="${GPU_CHECK_STEPS:-}"
WHEEL_DIR="${WHEEL_DIR:-$ROOT/.whl}"
SITE_DIR="${SITE_DIR:-/tmp/labelsmooth-gpu-site}"
VENV="${VENV:-/tmp/labelsmooth-gpu-venv}"
BUDGET_S="${BUDGET_S:-470}"
WORKERS="${PYTEST_WORKERS:-8}"
PEERS="$ROOT/benchmarks/gpu_peers.txt"
CHECKS="pytest-triton,benchmark,pytest-cuda,report"
for variable in BUDGET_S PYTEST_WORKERS; do
    if [[ ! "${!variable:-0}" =~ ^[0-9]+$ ]]; then
        echo "$variable: expected a whole number, got '${!variable}'" >&2
        exit 2
    fi
done
for name in ${STEPS//,/ }; do
    if [[ ",$CHECKS," != *",$name,"* ]]; then
        echo "GPU_CHECK_STEPS: expected names among $CHECKS, got '$name'" >&2
        exit 2
    fi
done
DEADLINE=$((SECONDS + BUDGET_S))
FAILED=()
SKIPPED=()

log() {
    local line="[gpu_check $(date -u +%H:%M:%S) +${SECONDS}s] $*"
    echo "$line" >&2
    ((DRY_RUN)) || echo "$line" >>"$LOG"
}

# skip NAME REASON: a step (or part of one) that cannot run here, said plainly; not a failure.
skip() {
    SKIPPED+=("$1")
    if ((DRY_RUN)); then
        echo "skip $1: $2"
    else
        log "$1: skipped: $2"
    fi
}

# step NAME LIMIT_S COMMAND...: run COMMAND under min(LIMIT_S, time left); its output goes to the
# terminal and is appended to gpu-check.log.
step() {
    local name="$1" limit="$2"
    shift 2
    if [[ -n "$STEPS" && ",$CHECKS," == *",$name,"* && ",$STEPS," != *",$name,"* ]]; then
        return 0
    fi
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
    log "$name: start (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]}
    if ((status != 0)); then
        log "$name: exit status $status$( ((status == 124)) && echo ' (time limit)')"
        FAILED+=("$name (exit $status)")
    else
        log "$name: done"
    fi
    return "$status"
}

# The summary; exit 1 if a step failed.
finish() {
    ((DRY_RUN)) && exit 0
    ((${#SKIPPED[@]})) && log "skipped: ${SKIPPED[*]}"
    if ((${#FAILED[@]})); then
        log "finished in ${SECONDS} s; failed: ${FAILED[*]}; everything in $OUT_DIR"
        exit 1
    fi
    log "finished in ${SECONDS} s; results in $OUT_DIR (gpu-check.log, pytest-*.xml, gpu-results.json, gpu-results.md)"
    exit 0
}

# The setting: offline where $PYTHON's torch already sees a GPU, else online.
choose_mode() {
    case "$MODE" in
    offline | online) ;;
    auto)
        if timeout 60 "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
            >/dev/null 2>&1; then
            MODE=offline
        else
            MODE=online
        fi
        ;;
    *)
        echo "GPU_CHECK_MODE: expected auto, offline or online, got '$MODE'" >&2
        exit 2
        ;;
    esac
}

# The offline peers: every wheel in WHEEL_DIR in one --no-index install; a pinned peer without a
# wheel there is said so (gpu_wheels.sh makes them).
install_offline_peers() {
    local name wheels=("$WHEEL_DIR"/*.whl)
    for name in $(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$PEERS"); do
        local found=("$WHEEL_DIR/${name//-/_}"-*.whl)
        ((${#found[@]})) || skip "$name" "no wheel in $WHEEL_DIR, so its benchmark columns will say skipped \
(make the wheels with 'bash benchmarks/gpu_wheels.sh' where PyPI is reachable, and carry .whl)"
    done
    ((${#wheels[@]})) || return 0
    step install-peers 60 "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE_DIR" "${wheels[@]}"
}

# The online setup: a venv with a CUDA torch, then the test tools and the peers pinned to it.
install_online() {
    local index_args=()
    [[ -n "${TORCH_INDEX:-}" ]] && index_args=(--index-url "$TORCH_INDEX")
    step venv 60 "$PYTHON" -m venv "$VENV"
    step install-torch 200 "$PY" -m pip install --quiet --progress-bar off "${index_args[@]}" torch numpy
    # The peers pinned to the torch just installed, so that neither replaces it.
    step pin-torch 20 bash -c "'$PY' -m pip freeze | grep -E '^(torch|triton)==' > '$VENV/constraints.txt'"
    step install-peers 120 "$PY" -m pip install --quiet --progress-bar off -c "$VENV/constraints.txt" \
        pytest hypothesis pytest-xdist -r "$PEERS"
}

choose_mode
if [[ "$MODE" == offline ]]; then
    PY="$PYTHON"
    export PYTHONPATH="$ROOT/src:$SITE_DIR"
else
    PY="$VENV/bin/python"
    export PYTHONPATH="$ROOT/src"
fi
# Kernels compiled for the GPU, never Triton's CPU interpreter; output unbuffered through tee.
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
# pytest: addopts' "-n auto" would start 16 workers, each importing torch, making a CUDA context and
# starting an Inductor pool of 16 compile processes; the tests' cost is compiling (Inductor's and the
# Triton kernels' variants, on the CPU), so 8 workers that compile in their own process
# (TORCHINDUCTOR_COMPILE_THREADS=1) keep the cores busy without 16 x 16 processes.
PYTEST=(env TORCHINDUCTOR_COMPILE_THREADS=1 "$PY" -m pytest -m cuda -q -p no:cacheprovider --durations=10
    -o "addopts=-ra --strict-markers")
if ((WORKERS > 0)); then
    PYTEST+=(-n "$WORKERS")
else
    PYTEST+=(-p no:xdist)
fi

if ((DRY_RUN)); then
    echo "dry run: mode $MODE, python $PY, PYTHONPATH=$PYTHONPATH, output folder $OUT_DIR, budget ${BUDGET_S} s"
else
    mkdir -p "$OUT_DIR"
    : >"$LOG"
    log "mode $MODE, python $PY, PYTHONPATH=$PYTHONPATH, output folder $OUT_DIR, budget ${BUDGET_S} s"
    log "commit $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'unknown (no git checkout here)')"
    command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | tee -a "$LOG"
fi

if [[ "$MODE" == offline ]]; then
    install_offline_peers
else
    install_online
fi
step cuda-available 60 "$PY" -c "import importlib.metadata as m, torch, triton; \
assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name()); \
found = {d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}; \
print({peer: found.get(peer, 'absent') for peer in ('liger-kernel', 'cut-cross-entropy')})" || {
    log "every step after this one needs CUDA: stopping"
    finish
}
# labelsmooth's own Triton kernels first: the new code, and the file is small.
step pytest-triton 120 "${PYTEST[@]}" --junitxml="$OUT_DIR/pytest-triton.xml" "$ROOT/tests/test_triton_linear.py"
step benchmark 240 "$PY" "$ROOT/benchmarks/run.py" --device cuda --mode idle --latency none \
    --out "$OUT_DIR/gpu-results.json"
# The parity files get what is left, less the report's 30 s.
step pytest-cuda $((DEADLINE - SECONDS - 30)) "${PYTEST[@]}" --junitxml="$OUT_DIR/pytest-cuda.xml" \
    "$ROOT/tests/test_kernels.py" "$ROOT/tests/test_linear_cross_entropy.py" "$ROOT/tests/test_z_loss_softcap.py"
# The table from the JSON as it stands (a partial run says INCOMPLETE in its header).
step report 30 bash -c "'$PY' '$ROOT/benchmarks/report.py' '$OUT_DIR/gpu-results.json' \
> '$OUT_DIR/gpu-results.md' || { rm -f '$OUT_DIR/gpu-results.md'; exit 1; }"
finish


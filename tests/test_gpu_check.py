"""benchmarks/gpu_check.sh --dry-run: the setting it picks and every step it would take on a lent GPU
machine, offline (wheels carried in) and online (registries reachable); nothing is run or written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
WHEELS = {"liger-kernel": "liger_kernel-0.8.5-py3-none-any.whl",
          "cut-cross-entropy": "cut_cross_entropy-25.1.1-py3-none-any.whl"}
CHECKS = ["cuda-available", "pytest-triton", "benchmark", "pytest-cuda", "report"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def dry_run(tmp_path, wheels=(), **env):
    """The script's dry run, with a wheel folder holding ``wheels`` (empty files) and ``env``."""
    wheel_dir = tmp_path / "whl"
    wheel_dir.mkdir(exist_ok=True)
    for name in wheels:
        (wheel_dir / WHEELS[name]).touch()
    env = {"PATH": "/usr/bin:/bin", "VENV": str(tmp_path / "venv"), "SITE_DIR": str(tmp_path / "site"),
           "WHEEL_DIR": str(wheel_dir), "BUDGET_S": "470", **env}
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "out")], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    return result


def steps(stdout):
    return {line.split()[1]: line for line in stdout.splitlines() if line.startswith("step ")}


def assert_checks(tmp_path, stdout):
    """The checks common to both settings, each bounded, with every result in the output folder."""
    found = steps(stdout)
    assert list(found)[-len(CHECKS):] == CHECKS
    out = tmp_path / "out"
    assert "-m pytest -m cuda" in found["pytest-triton"] and "test_triton_linear.py" in found["pytest-triton"]
    assert f"--junitxml={out}/pytest-triton.xml" in found["pytest-triton"]
    assert f"--junitxml={out}/pytest-cuda.xml" in found["pytest-cuda"]
    assert f"run.py --device cuda --mode idle --latency none --out {out}/gpu-results.json" in found[
        "benchmark"]
    assert f"> '{out}/gpu-results.md'" in found["report"]
    limits = [int(line.split("(at most ")[1].split(" s)")[0]) for line in found.values()]
    assert all(0 < limit <= 470 for limit in limits)
    assert not any((tmp_path / name).exists() for name in ("out", "venv", "site"))


def test_offline_installs_the_carried_wheels_without_an_index_and_no_venv(tmp_path):
    result = dry_run(tmp_path, wheels=WHEELS, GPU_CHECK_MODE="offline", PYTHON="/opt/torch/bin/python3")
    assert result.returncode == 0, result.stderr
    setting = f"mode offline, python /opt/torch/bin/python3, PYTHONPATH={ROOT}/src:{tmp_path}/site"
    assert setting in result.stdout
    found = steps(result.stdout)
    assert list(found) == ["install-peers", *CHECKS]
    install = found["install-peers"]
    assert "--no-index --no-deps" in install and f"--target {tmp_path}/site" in install
    assert all(str(tmp_path / "whl" / wheel) in install for wheel in WHEELS.values())
    assert "skip " not in result.stdout
    assert_checks(tmp_path, result.stdout)


@pytest.mark.parametrize("present", [(), ("liger-kernel",)], ids=["no-wheels", "liger-only"])
def test_offline_says_which_peer_has_no_wheel_and_goes_on(tmp_path, present):
    result = dry_run(tmp_path, wheels=present, GPU_CHECK_MODE="offline")
    assert result.returncode == 0, result.stderr
    skips = [line for line in result.stdout.splitlines() if line.startswith("skip ")]
    assert [line.split()[1].rstrip(":") for line in skips] == [n for n in WHEELS if n not in present]
    assert all("gpu_wheels.sh" in line for line in skips)
    found = steps(result.stdout)
    assert ("install-peers" in found) == bool(present)
    assert_checks(tmp_path, result.stdout)


def test_online_makes_its_venv_and_installs_the_pinned_peers_from_the_index(tmp_path):
    result = dry_run(tmp_path, GPU_CHECK_MODE="online")
    assert result.returncode == 0, result.stderr
    found = steps(result.stdout)
    assert list(found) == ["venv", "install-torch", "pin-torch", "install-peers", *CHECKS]
    assert f"-m venv {tmp_path}/venv" in found["venv"]
    assert f"PYTHONPATH={ROOT}/src," in result.stdout
    install = found["install-peers"]
    assert "--no-index" not in install and f"-r {ROOT}/benchmarks/gpu_peers.txt" in install
    assert f"{tmp_path}/venv/bin/python -m pytest" in found["pytest-cuda"]
    assert_checks(tmp_path, result.stdout)


# A stand-in Python whose "import torch; exit 0 if CUDA" succeeds (true) or fails (false).
@pytest.mark.parametrize(("python", "mode"), [("true", "offline"), ("false", "online")])
def test_auto_picks_offline_where_python_already_sees_cuda(tmp_path, python, mode):
    result = dry_run(tmp_path, PYTHON=shutil.which(python) or python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"dry run: mode {mode},")


def test_a_rerun_of_one_check_keeps_the_setup_and_gets_the_budget(tmp_path):
    result = dry_run(tmp_path, wheels=WHEELS, GPU_CHECK_MODE="offline", GPU_CHECK_STEPS="pytest-cuda")
    assert result.returncode == 0, result.stderr
    found = steps(result.stdout)
    assert list(found) == ["install-peers", "cuda-available", "pytest-cuda"]
    assert "(at most 440 s)" in found["pytest-cuda"]  # the budget less the report's 30 s


@pytest.mark.parametrize(("variable", "value"), [("GPU_CHECK_MODE", "gpu"), ("GPU_CHECK_STEPS", "bench"),
                                                 ("PYTEST_WORKERS", "four"), ("BUDGET_S", "-1")])
def test_bad_settings_are_refused_by_name(tmp_path, variable, value):
    result = dry_run(tmp_path, **{variable: value})
    assert result.returncode == 2
    assert variable in result.stderr and f"'{value}'" in result.stderr
    assert not result.stdout

"""``compare(executor="ray")`` on a real local Ray instance gives the local executor's numbers.

The instance is bound to 127.0.0.1 (Ray treats the machine as a single-node, loopback-only cluster when
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ``ray`` is imported), has no dashboard and 2 CPUs, and is
shut down at the end. This is the slow test of the compare suite (about a minute on 2 busy cores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Before ray is imported: every Ray server then listens on 127.0.0.1 only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")
pytest.importorskip("sklearn")

import compare_helpers as helpers  # noqa: E402 - after the environment variable above
from labelsmooth.experiments import compare  # noqa: E402

HELPERS = Path(helpers.__file__).parent


@pytest.mark.slow
def test_ray_executor_equals_the_local_one(tmp_path, monkeypatch):
    # Ray's workers import the model factory by name: they need this folder on their path.
    path = [str(HELPERS), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        node = ray.nodes()[0]
        assert node["NodeManagerAddress"] == "127.0.0.1"
        remote = compare(**helpers.options(), executor="ray", out=tmp_path / "ray")
        assert ray.is_initialized()  # a cluster compare joined is left running
    finally:
        ray.shutdown()
    local = compare(**helpers.options(), out=tmp_path / "local")
    assert json.dumps(remote.to_dict()) == json.dumps(local.to_dict())
    documents = [(tmp_path / name / "metrics.json").read_text() for name in ("ray", "local")]
    assert documents[0] == documents[1]
    assert len((tmp_path / "ray" / "runs.jsonl").read_text().splitlines()) == 5

"""The Ray that labelsmooth starts itself listens on 127.0.0.1 only and ships the driver's import path;
on a cluster it only joins, a module the workers cannot import is named before any run is sent.

Each test starts a real local Ray (2 CPUs or fewer, no dashboard) and shuts it down.
"""

from __future__ import annotations

import importlib
import textwrap

import pytest

ray = pytest.importorskip("ray")

from labelsmooth.experiments import _ray  # noqa: E402 (after the importorskip)
from labelsmooth.experiments.data import DataError  # noqa: E402


@pytest.fixture
def private_module(tmp_path, monkeypatch):
    """A module importable here only through this process's sys.path (not PYTHONPATH)."""
    (tmp_path / "only_on_driver.py").write_text(textwrap.dedent("""
        class Factory:
            def __call__(self):
                return 41 + 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield importlib.import_module("only_on_driver")
    monkeypatch.delitem(__import__("sys").modules, "only_on_driver")
    if ray.is_initialized():
        ray.shutdown()


def _call(factory):
    return factory()


@pytest.mark.slow
def test_started_ray_is_loopback_and_workers_import_the_drivers_path(private_module):
    connected, local = _ray.connect(ray, None, 1)
    assert (connected, local) == (True, True)
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == [_ray.LOOPBACK]
    assert ray.get_runtime_context().gcs_address.startswith(_ray.LOOPBACK + ":")
    # The factory's class is pickled by reference: the worker imports only_on_driver from the shipped path.
    assert ray.get(ray.remote(_call).remote(private_module.Factory())) == 42


@pytest.mark.slow
def test_joined_cluster_names_the_module_its_workers_lack(private_module):
    with _ray._loopback_only(ray):
        ray.init(address="local", _node_ip_address=_ray.LOOPBACK, num_cpus=1, include_dashboard=False,
                 log_to_driver=False)
    assert _ray.connect(ray, None, 1) == (False, False)  # joined: labelsmooth neither starts nor stops it
    assert _ray.needed_modules(private_module.Factory()) == ["only_on_driver"]
    with pytest.raises(DataError, match=r"module 'only_on_driver' missing on the workers.*") as error:
        _ray.check_workers(ray, {"model": private_module.Factory()})
    assert "py_modules" in str(error.value) and str(private_module.__file__) in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    _ray.check_workers(ray, {"numbers": [1.5, 2]})  # nothing to import: no error

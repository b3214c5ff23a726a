"""The public surface: every public module says what it exports, and the version has one source."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from pathlib import Path

import pytest

import labelsmooth as ls

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(ls.__path__, prefix="labelsmooth."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as error:  # an optional extra that this environment lacks
        pytest.skip(f"{name} needs an optional dependency: {error}")


def test_the_walk_finds_the_public_modules():
    modules = _public_modules()
    assert {"labelsmooth.targets", "labelsmooth.schedules", "labelsmooth.algorithms.mixup"} <= set(modules)
    assert not any(name.rsplit(".", 1)[-1].startswith("_") for name in modules)


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_declares_all_and_every_name_exists(name):
    module = _import(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)


def test_compute_dtype_is_not_public_in_targets():
    import labelsmooth.targets as targets

    assert "compute_dtype" not in targets.__all__
    assert "compute_dtype" not in ls.__all__


def test_version_comes_from_the_package_metadata():
    declared = re.search(r'^version = "([^"]+)"$', PYPROJECT.read_text(), re.MULTILINE)
    assert declared is not None
    assert ls.__version__ == importlib.metadata.version("labelsmooth") == declared.group(1)

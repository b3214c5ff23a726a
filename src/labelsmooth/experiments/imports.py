"""``pkg.module:attribute`` specs: how the CLI finds the user's model factory and data loader."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from labelsmooth.experiments.data import fail

__all__ = ["load_object", "load_splits"]


def load_object(spec: str, arg: str) -> Any:
    """The object ``spec`` (``"pkg.module:name"`` or ``"pkg.module:Class.method"``) names.

    The current directory is searched first, as ``python -m`` does, so a
    ``mymodel.py`` beside the command is found; worker processes inherit it.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise fail(arg, "'pkg.module:name'", spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:  # any error of the user's module on import: say which, in one line
        raise fail(arg, "an importable 'pkg.module:name'",
                   f"{spec} ({type(error).__name__}: {error})".splitlines()[0]) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise fail(arg, f"a name defined in {module_name}", f"{spec} (no {part!r} there)")
        obj = getattr(obj, part)
    if not callable(obj):
        raise fail(arg, "a callable", f"{spec} (a {type(obj).__name__})")
    return obj


def load_splits(spec: str) -> tuple[Any, Any, Any]:
    """Call the loader ``spec`` names; it returns ``(train, test)`` or ``(train, val, test)``."""
    splits = load_object(spec, "data")()
    if not isinstance(splits, (tuple, list)) or len(splits) not in (2, 3):
        size = f" of {len(splits)}" if isinstance(splits, (tuple, list)) else ""
        got = f"a {type(splits).__name__}{size}"
        raise fail("data", "a loader returning (train, test) or (train, val, test) torch Datasets",
                   f"{got} from {spec}()")
    if len(splits) == 2:
        return splits[0], None, splits[1]
    return splits[0], splits[1], splits[2]

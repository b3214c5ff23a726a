"""What ``labelsmooth compare`` runs: producers of run records, the analysis of records, the report.

``compare`` trains the same model once per alpha and seed (the built-in
producer; :class:`CompareConfig` holds its options, their defaults and
checks); ``save_run`` writes one run's record from any trainer;
``compare_runs`` analyses a set of records. Needs the ``cli`` extra
(scikit-learn, scipy, pandas, Pillow, matplotlib); ``import labelsmooth``
itself never imports this package. Each name is imported at its first use
(:mod:`labelsmooth._lazy`), so reading :class:`CompareConfig`'s defaults
costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelsmooth import _lazy

if TYPE_CHECKING:
    from labelsmooth.experiments._compare import Progress, compare
    from labelsmooth.experiments._compare_runs import compare_runs
    from labelsmooth.experiments._config import CompareConfig
    from labelsmooth.experiments._records import RunRecord, read_run, save_run
    from labelsmooth.experiments._results import CompareResult, RunResult
    from labelsmooth.experiments.data import DataError
    from labelsmooth.experiments.sources import load_dataset

__all__ = [
    "CompareConfig", "CompareResult", "DataError", "Progress", "RunRecord", "RunResult", "compare",
    "compare_runs", "load_dataset", "read_run", "save_run",
]

_WHERE = {
    "Progress": "labelsmooth.experiments._compare", "compare": "labelsmooth.experiments._compare",
    "compare_runs": "labelsmooth.experiments._compare_runs",
    "CompareConfig": "labelsmooth.experiments._config",
    "RunRecord": "labelsmooth.experiments._records", "read_run": "labelsmooth.experiments._records",
    "save_run": "labelsmooth.experiments._records", "CompareResult": "labelsmooth.experiments._results",
    "RunResult": "labelsmooth.experiments._results", "DataError": "labelsmooth.experiments.data",
    "load_dataset": "labelsmooth.experiments.sources",
}


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, globals(), name, _WHERE)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

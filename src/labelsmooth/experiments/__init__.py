"""What ``labelsmooth compare`` runs: producers of run records, the analysis of records, the report.

``compare`` trains the same model once per alpha and seed (the built-in
producer); ``save_run`` writes one run's record from any trainer;
``compare_runs`` analyses a set of records. Needs the ``cli`` extra
(scikit-learn, scipy, pandas, Pillow, matplotlib); ``import labelsmooth``
itself never imports this package.
"""

from labelsmooth.experiments._compare_runs import compare_runs
from labelsmooth.experiments._records import RunRecord, read_run, save_run
from labelsmooth.experiments._results import CompareResult, RunResult
from labelsmooth.experiments.compare import Progress, compare
from labelsmooth.experiments.data import DataError, DataSet, from_datasets
from labelsmooth.experiments.sources import load_dataset
from labelsmooth.experiments.train import TrainConfig

__all__ = [
    "CompareResult", "DataError", "DataSet", "Progress", "RunRecord", "RunResult", "TrainConfig", "compare",
    "compare_runs", "from_datasets", "load_dataset", "read_run", "save_run",
]

"""What ``labelsmooth compare`` runs: data sets, small models, the training loop, executors, the run store
and the report.

Needs the ``cli`` extra (scikit-learn, scipy, pandas, Pillow, matplotlib);
``import labelsmooth`` itself never imports this package.
"""

from labelsmooth.experiments.compare import CompareResult, Progress, compare
from labelsmooth.experiments.data import DataError, DataSet, from_datasets
from labelsmooth.experiments.run import RunResult
from labelsmooth.experiments.sources import load_dataset
from labelsmooth.experiments.train import TrainConfig

__all__ = [
    "CompareResult", "DataError", "DataSet", "Progress", "RunResult", "TrainConfig", "compare",
    "from_datasets", "load_dataset",
]

"""What ``labelsmooth compare`` runs: data sets, small models, the training loop and the report.

Needs the ``cli`` extra (scikit-learn, scipy, pandas, Pillow, matplotlib);
``import labelsmooth`` itself never imports this package.
"""

from labelsmooth.experiments.compare import CompareResult, compare
from labelsmooth.experiments.data import DataError, DataSet, load_dataset
from labelsmooth.experiments.train import RunResult, TrainConfig

__all__ = ["CompareResult", "DataError", "DataSet", "RunResult", "TrainConfig", "compare", "load_dataset"]

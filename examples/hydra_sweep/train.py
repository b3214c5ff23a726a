"""A Hydra sweep over alpha and seed, one run record per job, then one comparison.

    python examples/hydra_sweep/train.py -m alpha=0,0.1 seed=0,1,2
    labelsmooth compare --runs runs/hydra_sweep/records --out runs/hydra_sweep/report

Each job of the multirun trains one (alpha, seed) and writes its record; ``compare --runs`` reads
them all. On SLURM the same sweep runs one job per task through the submitit launcher
(``pip install hydra-submitit-launcher``; not run here):

    python examples/hydra_sweep/train.py -m hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.timeout_min=60 alpha=0,0.1 seed=0,1,2
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

# The run itself is shared with the Ray Tune example, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweep_task import train_and_save


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(config: DictConfig) -> None:
    path = train_and_save(config.records, float(config.alpha), int(config.seed))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

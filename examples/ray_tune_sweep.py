"""A Ray Tune grid over alpha and seed, one run record per trial, then one comparison.

    python examples/ray_tune_sweep.py --out runs/ray_tune_sweep [--alphas 0 0.1] [--seeds 0 1 2]

Each trial of ``tune.grid_search`` trains one (alpha, seed) (``sweep_task.train_and_save``) and writes
its record; the script ends with ``labelsmooth compare --runs OUT/records --out OUT/report``. Ray runs
here on this machine only: bound to 127.0.0.1 (a Ray head that listens on every interface runs any
code sent to it), no dashboard, 2 CPUs. On a cluster, drop the ``ray.init`` arguments and pass
``address="auto"``; the trials' folder must then be shared storage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Read when ray is imported: Ray then keeps 127.0.0.1 as the node's address instead of replacing it
# with the machine's routable one.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray import tune
from sweep_task import train_and_save

from labelsmooth.cli import main as labelsmooth

HERE = Path(__file__).resolve().parent


def trial(config: dict) -> None:
    """One (alpha, seed) run: train, write the record, report where it went."""
    path = train_and_save(config["records"], config["alpha"], config["seed"])
    tune.report({"record": str(path)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ray_tune_sweep"))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    out = args.out.resolve()
    # The workers import sweep_task from this folder; the driver's other paths (labelsmooth's) go too.
    path = os.pathsep.join([str(HERE), *sys.path[1:]])
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": 1}),
            param_space={"alpha": tune.grid_search(args.alphas), "seed": tune.grid_search(args.seeds),
                         "records": str(out / "records")},
            run_config=tune.RunConfig(name="sweep", storage_path=str(out / "tune"), verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    if results.errors:
        print(f"{len(results.errors)} trials failed: {results.errors[0]}", file=sys.stderr)
        return 1
    return labelsmooth(["compare", "--runs", str(out / "records"), "--out", str(out / "report"),
                        "--overwrite"])


if __name__ == "__main__":
    sys.exit(main())

"""Executors: map (alpha, seed) runs to workers and yield each result as it finishes.

* :func:`run_local`: one after the other, in this process;
* :func:`run_processes`: ``jobs`` local worker processes (``spawn``: CUDA and
  every platform work, and no worker inherits a half-used thread pool);
* :func:`run_ray`: one Ray task per run, on an existing cluster or a local one.

Every run is :func:`~labelsmooth.experiments.run.execute` on the same context,
so every executor gives the same bits. Stopping the iteration (Ctrl-C)
stops the workers.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence

import torch

from labelsmooth.experiments import _config
from labelsmooth.experiments._ray import check_workers, connect
from labelsmooth.experiments._results import RunResult
from labelsmooth.experiments.data import fail
from labelsmooth.experiments.run import RunContext, execute

__all__ = ["EXECUTORS", "check_picklable", "run_local", "run_processes", "run_ray"]

Grid = Sequence[tuple[float, int]]
EXECUTORS = _config.EXECUTORS

_CONTEXT: RunContext | None = None


def run_local(context: RunContext, grid: Grid,
              on_step: Callable[[], None] | None = None) -> Iterator[RunResult]:
    """The runs of ``grid`` one after the other in this process."""
    for alpha, seed in grid:
        yield execute(context, alpha, seed, on_step)


def check_picklable(context: RunContext) -> None:
    """Raise naming the part of ``context`` another process cannot receive (a lambda, a local class)."""
    parts = {"model": context.model, "optimizer": context.config.optimizer, "train": context.data.train,
             "val": context.data.val, "test": context.data.test}
    for name, part in parts.items():
        try:
            pickle.dumps(part)
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise fail(name, "something picklable for jobs > 1 (a module-level function or class)",
                       f"{part!r} ({error})".splitlines()[0]) from None


def _start_worker(context: RunContext) -> None:
    global _CONTEXT
    # Ctrl-C reaches the whole process group; the parent stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A fresh process sizes torch's pool to every core: jobs workers would each take them all and compete.
    torch.set_num_threads(context.config.threads)
    _CONTEXT = context


def _work(job: tuple[float, int]) -> RunResult:
    if _CONTEXT is None:  # pragma: no cover - the pool's initializer always ran first
        raise RuntimeError("worker started without a run context")
    return execute(_CONTEXT, *job)


def run_processes(context: RunContext, grid: Grid, jobs: int) -> Iterator[RunResult]:
    """The runs of ``grid`` in ``jobs`` spawned worker processes, yielded as they finish.

    ``context`` must pickle (:func:`check_picklable` says what does not).
    """
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(grid)), initializer=_start_worker,
                                                    initargs=(context,))
    try:
        yield from pool.imap_unordered(_work, grid)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _ray_run(context: RunContext, alpha: float, seed: int) -> RunResult:
    return execute(context, alpha, seed)


def run_ray(context: RunContext, grid: Grid, address: str | None = None) -> Iterator[RunResult]:
    """The runs of ``grid`` as Ray tasks, yielded as they finish.

    Joins the cluster at ``address`` (or the one this process already joined)
    after checking that its workers can import what the runs need; with
    neither, starts a local one on 127.0.0.1 without a dashboard, its workers
    on this process's import path, and stops it at the end
    (:func:`~._ray.connect`). A task asks for ``threads`` CPUs, and
    one GPU when the device is CUDA.
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise fail("executor", 'Ray installed (pip install "labelsmooth[ray]")', "ray") from None
    connected, local = connect(ray, address, context.config.threads)
    cuda = context.config.device.startswith("cuda")
    task = ray.remote(_ray_run).options(num_cpus=context.config.threads, num_gpus=1 if cuda else 0,
                                        max_retries=0)
    pending: list[object] = []
    try:
        if not local:
            check_workers(ray, context)
        shared = ray.put(context)
        pending = [task.remote(shared, alpha, seed) for alpha, seed in grid]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if connected:
            ray.shutdown()

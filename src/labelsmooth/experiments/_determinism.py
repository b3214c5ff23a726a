"""Deterministic kernels and a fixed thread count: the same inputs give the same bits in any process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["deterministic"]


@contextmanager
def deterministic(threads: int = 1, device: str = "cpu") -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the body; restored afterwards.

    On CPU every op used here has a deterministic kernel. On CUDA cuBLAS needs
    ``CUBLAS_WORKSPACE_CONFIG`` (set here if unset) and an op without a
    deterministic kernel only warns, so the run goes on.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_threads = torch.get_num_threads()
    on_cpu = torch.device(device).type == "cpu"
    if not on_cpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=not on_cpu)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_num_threads(previous_threads)

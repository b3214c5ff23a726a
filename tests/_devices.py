"""The devices the parity tests run on: the CPU always, CUDA where there is a GPU.

A test takes ``device`` through ``@pytest.mark.parametrize("device", DEVICES)``. The CUDA case is
marked ``cuda`` (``pytest -m cuda`` selects it) and only collected where CUDA is available, so a
machine without a GPU runs the same tests as before.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])

#: ``(device, backend)`` of the fused output layer: ``"auto"`` on the CPU (the chunked path); on
#: CUDA both the Triton kernels (``"auto"``) and the row chunks (``"chunked"``).
LINEAR_PATHS = [pytest.param(("cpu", "auto"), id="cpu")] + (
    [pytest.param(("cuda", name), id=f"cuda-{name}", marks=pytest.mark.cuda) for name in ("auto", "chunked")]
    if torch.cuda.is_available() else []
)

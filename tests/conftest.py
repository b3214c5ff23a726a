"""Test-wide settings: property tests draw the same examples on every run."""

import os

import torch
from hypothesis import settings

# Without a GPU, the Triton kernels' tests (test_triton_linear.py) run on CPU tensors in Triton's
# interpreter. The variable must be set before triton.language is first imported (``import
# labelsmooth`` does, through torch._dynamo): it decides how Triton builds its own functions.
# On CPU nothing else reads it (Inductor's CPU code is C++).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Derandomized: a CI run is repeatable, and a failure found once is found again.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.load_profile("repeatable")

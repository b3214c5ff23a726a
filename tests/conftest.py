"""Test-wide settings: property tests draw the same examples on every run."""

import os

import pytest
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

#: Whole files of end-to-end, multi-process and compile tests: the quick tier (``-m "not slow"``) leaves
#: them out; the full suite (the README's test command, CI) runs them.
SLOW_FILES = {
    "test_cli.py", "test_compare_api.py", "test_compare_example.py", "test_compare_mnist1d.py",
    "test_compare_ray.py", "test_compile.py", "test_distributed.py", "test_examples.py", "test_lightning.py",
    "test_tensor_parallel.py", "test_transformers.py", "test_trl.py",
}


#: End-to-end files (training loops, the CLI, integrations): they test the pipelines, not the kernels, so
#: they run the chunked kernel, here and in the processes they start, and skip Inductor's compiles (seconds
#: per new variant in every process). The kernels' own files test both backends against PyTorch.
CHUNKED_FILES = {
    "test_cli.py", "test_compare_api.py", "test_compare_example.py", "test_compare_mnist1d.py",
    "test_compare_ray.py", "test_compare_report.py", "test_compare_runs.py", "test_early_stopping.py",
    "test_examples.py", "test_experiments.py", "test_lightning.py", "test_transformers.py", "test_trl.py",
}


@pytest.fixture(autouse=True)
def _chunked_end_to_end(request, monkeypatch):
    if request.node.path.name not in CHUNKED_FILES:
        yield
        return
    import labelsmooth

    monkeypatch.setenv("LABELSMOOTH_KERNEL", "chunked")
    with labelsmooth.kernels.use_backend("chunked"):
        yield


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


#: A valid-looking PNG signature and an SVG element: what :func:`quick_figures` writes.
STUB_PNG, STUB_SVG = b"\x89PNG\r\n\x1a\n(figure not rendered in this test)", b"<svg/>"


@pytest.fixture
def quick_figures(request, monkeypatch):
    """Build every figure but skip matplotlib's rendering (about 4 s of each report) in tests that check
    the store, resume, Ctrl-C or the numbers, not the pictures (a test marked ``real_figures`` and the
    report tests render them)."""
    if request.node.get_closest_marker("real_figures"):
        return
    import matplotlib.pyplot as plt

    from labelsmooth.experiments import _figures as figures

    def render(figure):
        plt.close(figure)
        return STUB_PNG, STUB_SVG

    monkeypatch.setattr(figures, "render", render)

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
    "test_tensor_parallel.py", "test_transformers.py", "test_trl.py", "test_experiments.py",
    "test_compare_inputs.py", "test_sweep_examples.py", "test_save_run_lightning.py", "test_ray_loopback.py",
    "test_keep_best_hf.py",
}
#: Single tests of the quick tier's files that take seconds each (a subprocess, gloo, Inductor's compiles of
#: many variants, a report with figures); the files' other tests cover the same code in less time.
SLOW_TESTS = {
    "test_index_targets_match_pytorch_loss_and_gradient", "test_checks_survive_python_dash_o",
    "test_two_gloo_processes_equal_one_process_on_the_combined_data", "test_linear_gradcheck_float64",
    "test_compare_writes_records_that_reproduce_its_summary",
    "test_reliability_panels_wrap_three_to_a_row_and_title_the_pooled_ece",
    "test_without_intervals_no_comparison_claims_to_be_inside_the_noise",
    "test_compare_runs_reports_per_token_metrics_of_the_full_logits",
    "test_hf_record_equals_save_run_from_the_same_logits",
    "test_report_has_provenance_and_the_bin_data_is_saved",
    "test_different_settings_are_allowed_on_request_and_said_in_the_report",
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
        if item.path.name in SLOW_FILES or getattr(item, "originalname", item.name) in SLOW_TESTS:
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

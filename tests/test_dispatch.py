"""The kernel dispatch rule: which backend runs, choosing one, and the fallback when compiling fails.

Oracle for the numbers: ``F.cross_entropy(label_smoothing=)``.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from labelsmooth.kernels import dispatch


@pytest.fixture(autouse=True)
def _restore_backend(monkeypatch):
    monkeypatch.setattr(dispatch, "_failed", {})
    yield
    ls.kernels.set_backend("auto")


def _loss_and_grad(fn):
    torch.manual_seed(0)
    logits = torch.randn(9, 6, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, -100, 2, 1])
    loss = fn(logits, targets)
    loss.backward()
    return loss.detach(), logits.grad


def _pytorch():
    return _loss_and_grad(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1))


def test_auto_picks_inductor_when_a_compiler_is_there():
    has_compiler = any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    assert ls.kernels.backend("cpu") == ("inductor" if has_compiler else "chunked")


@pytest.mark.parametrize("name", ["chunked", "inductor"])
def test_set_backend_is_what_backend_reports_and_both_match_pytorch(name):
    ls.kernels.set_backend(name)
    assert ls.kernels.backend("cpu") == name
    ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
    expected = _pytorch()
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


def test_unknown_backend_is_refused():
    expected = r"backend: expected one of 'auto', 'inductor', 'chunked', 'triton', got 'cuda'"
    with pytest.raises(ValueError, match=expected):
        ls.kernels.set_backend("cuda")


def test_a_device_without_a_compiler_path_gets_the_chunked_kernel():
    assert ls.kernels.backend("meta") == "chunked"


def test_failed_compilation_warns_once_and_falls_back(monkeypatch):
    def broken(*args):
        raise torch._dynamo.exc.BackendCompilerFailed(broken, RuntimeError("no compiler"), None)

    monkeypatch.setitem(dispatch._COMPILED, "fused_rows", broken)
    monkeypatch.setitem(dispatch._COMPILED, "row_statistics", broken)
    ls.kernels.set_backend("inductor")
    with pytest.warns(RuntimeWarning, match="compiling the fused kernel failed on cpu"):
        ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
    assert ls.kernels.backend("cpu") == "chunked"
    assert "BackendCompilerFailed" in dispatch.failure("cpu")
    expected = _pytorch()
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


def test_errors_that_are_not_compile_failures_propagate(monkeypatch):
    def wrong(*args):
        raise RuntimeError("index out of bounds")

    monkeypatch.setitem(dispatch._COMPILED, "fused_rows", wrong)
    ls.kernels.set_backend("inductor")
    with pytest.raises(RuntimeError, match="index out of bounds"):
        _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
    assert dispatch.failure("cpu") is None


def test_a_row_function_past_the_recompile_limit_raises_variant_limit(monkeypatch):
    """Dynamo's own limit, on a fresh function: the second dtype is a second graph."""
    monkeypatch.setattr(dispatch, "RECOMPILE_LIMIT", 1)

    def twice(x):
        return x * 2

    run = dispatch._compile(twice)
    torch.testing.assert_close(run(torch.ones(3)), torch.full((3,), 2.0))
    with pytest.raises(dispatch.RecompileLimitError, match=r"twice: Dynamo's recompile limit \(1\) reached"):
        run(torch.ones(3, dtype=torch.float64))


def _past_the_limit(*args):
    raise dispatch.RecompileLimitError("row function: Dynamo's recompile limit (1) reached")


def test_past_the_limit_new_variants_run_the_chunked_kernel_with_one_warning(monkeypatch):
    for name in ("fused_rows", "row_statistics", "row_gradient"):
        monkeypatch.setitem(dispatch._COMPILED, name, _past_the_limit)
    monkeypatch.setattr(dispatch, "_past_limit", [])
    ls.kernels.set_backend("inductor")
    with pytest.warns(RuntimeWarning, match="recompile limit") as caught:
        ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
        per_row = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1, reduction="none").sum())
    assert len([w for w in caught if "recompile limit" in str(w.message)]) == 1
    assert ls.kernels.backend("cpu") == "inductor"  # compiled variants keep running
    expected = _pytorch()
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])
    expected_sum = _loss_and_grad(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1, reduction="sum"))
    torch.testing.assert_close(per_row[0], expected_sum[0])
    torch.testing.assert_close(per_row[1], expected_sum[1])


def test_past_the_limit_the_fallback_allocates_no_buffer_of_the_logits_size(monkeypatch):
    from torch.profiler import ProfilerActivity, profile

    for name in ("fused_rows", "row_statistics"):
        monkeypatch.setitem(dispatch._COMPILED, name, _past_the_limit)
    monkeypatch.setattr(dispatch, "_past_limit", ["reported"])
    ls.kernels.set_backend("inductor")
    # Larger than one chunk of the chunked kernel (DEFAULT_CHUNK_ELEMENTS), whose buffers are chunk-sized.
    n, c = 64, 100_000
    logits, targets = torch.randn(n, c), torch.randint(0, c, (n,))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = ls.cross_entropy(logits, targets, alpha=0.1)
    assert sum(1 for e in prof.events() if e.cpu_memory_usage >= n * c * 4) == 0
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, label_smoothing=0.1))

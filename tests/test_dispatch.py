"""The kernel dispatch rule: which backend runs, choosing one, and the fallback when compiling fails.

Oracle for the numbers: ``F.cross_entropy(label_smoothing=)``.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from labelsmooth.kernels import dispatch, rowmath


@pytest.fixture(autouse=True)
def _own_failures(monkeypatch):
    """Each test starts with no device given up and no recompile-limit warning given."""
    monkeypatch.setattr(dispatch, "_failed", {})
    monkeypatch.setattr(dispatch, "_past_limit", [])


def _loss_and_grad(fn):
    torch.manual_seed(0)
    logits = torch.randn(9, 6, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, -100, 2, 1])
    loss = fn(logits, targets)
    loss.backward()
    return loss.detach(), logits.grad


def _pytorch():
    return _loss_and_grad(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1))


def _assert_matches(ours, expected):
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1], expected[1])


def test_auto_picks_inductor_when_a_compiler_is_there():
    has_compiler = any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    with ls.kernels.use_backend("auto"):
        assert ls.kernels.backend("cpu") == ("inductor" if has_compiler else "chunked")


@pytest.mark.parametrize("name", ["chunked", "inductor"])
def test_use_backend_is_what_backend_reports_and_both_match_pytorch(name):
    with ls.kernels.use_backend(name):
        assert ls.kernels.backend("cpu") == name
        ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
    _assert_matches(ours, _pytorch())


def test_use_backend_restores_the_previous_request_also_after_an_error(monkeypatch):
    monkeypatch.setattr(dispatch, "_requested", "chunked")  # as LABELSMOOTH_KERNEL=chunked would
    with pytest.raises(KeyError), ls.kernels.use_backend("inductor"):
        assert ls.kernels.backend("cpu") == "inductor"
        with ls.kernels.use_backend("auto"):
            raise KeyError("inside")
    assert dispatch._requested == "chunked"
    assert ls.kernels.backend("cpu") == "chunked"


def test_set_backend_inside_use_backend_lasts_until_the_block_ends(monkeypatch):
    monkeypatch.setattr(dispatch, "_requested", "auto")
    with ls.kernels.use_backend("inductor"):
        ls.kernels.set_backend("chunked")
        assert ls.kernels.backend("cpu") == "chunked"
    assert dispatch._requested == "auto"


@pytest.mark.parametrize("choose", [ls.kernels.set_backend, ls.kernels.use_backend], ids=["set", "use"])
def test_unknown_backend_is_refused_and_the_request_kept(choose, monkeypatch):
    monkeypatch.setattr(dispatch, "_requested", "chunked")
    expected = r"backend: expected one of 'auto', 'inductor', 'chunked', 'triton', got 'cuda'"
    with pytest.raises(ValueError, match=expected), choose("cuda"):
        pass
    assert dispatch._requested == "chunked"


def test_a_device_without_a_compiler_path_gets_the_chunked_kernel():
    assert ls.kernels.backend("meta") == "chunked"


def _compile_failure(*args):
    raise torch._dynamo.exc.BackendCompilerFailed(_compile_failure, RuntimeError("no compiler"), None)


def _past_the_limit(*args):
    raise dispatch.RecompileLimitError("row function: Dynamo's recompile limit (1) reached")


def _compiled_as(monkeypatch, **functions):
    """Stand-ins for the compiled row functions: the plain one (``"plain"``) or a failure."""
    for name, function in functions.items():
        stand_in = getattr(rowmath, name) if function == "plain" else function
        monkeypatch.setitem(dispatch._COMPILED, name, stand_in)


def test_failed_compilation_warns_once_and_falls_back(monkeypatch):
    _compiled_as(monkeypatch, fused_rows=_compile_failure, row_statistics=_compile_failure)
    with ls.kernels.use_backend("inductor"):
        with pytest.warns(RuntimeWarning, match="compiling the fused kernel failed on cpu"):
            ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
        assert ls.kernels.backend("cpu") == "chunked"
    assert "BackendCompilerFailed" in dispatch.failure("cpu")
    _assert_matches(ours, _pytorch())


def test_errors_that_are_not_compile_failures_propagate(monkeypatch):
    def wrong(*args):
        raise RuntimeError("index out of bounds")

    _compiled_as(monkeypatch, fused_rows=wrong)
    with ls.kernels.use_backend("inductor"), pytest.raises(RuntimeError, match="index out of bounds"):
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


def test_past_the_limit_new_variants_run_the_chunked_kernel_with_one_warning(monkeypatch):
    _compiled_as(monkeypatch, fused_rows=_past_the_limit, row_statistics=_past_the_limit,
                 row_gradient=_past_the_limit)
    with ls.kernels.use_backend("inductor"):
        with pytest.warns(RuntimeWarning, match="recompile limit") as caught:
            ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1))
            per_row = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1, reduction="none").sum())
        assert ls.kernels.backend("cpu") == "inductor"  # compiled variants keep running
    assert len([w for w in caught if "recompile limit" in str(w.message)]) == 1
    _assert_matches(ours, _pytorch())
    expected_sum = _loss_and_grad(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1, reduction="sum"))
    _assert_matches(per_row, expected_sum)


# Larger than one chunk of the chunked kernel (DEFAULT_CHUNK_ELEMENTS), whose buffers are chunk-sized.
_WIDE = (64, 100_000)


def _buffers_of_the_logits_size(step):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Self allocations: an operator's own count includes those of the operators it calls.
    return sum(1 for e in prof.events() if e.self_cpu_memory_usage >= _WIDE[0] * _WIDE[1] * 4)


def test_past_the_limit_the_forward_allocates_no_buffer_of_the_logits_size(monkeypatch):
    _compiled_as(monkeypatch, fused_rows=_past_the_limit, row_statistics=_past_the_limit)
    monkeypatch.setattr(dispatch, "_past_limit", ["reported"])
    logits, targets = torch.randn(*_WIDE), torch.randint(0, _WIDE[1], (_WIDE[0],))
    losses = []
    with ls.kernels.use_backend("inductor"):
        count = _buffers_of_the_logits_size(
            lambda: losses.append(ls.cross_entropy(logits, targets, alpha=0.1)))
    assert count == 0
    torch.testing.assert_close(losses[0], F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_past_the_limit_the_backward_allocates_the_gradient_only(monkeypatch):
    """The forward compiled, the backward's gradient not: it is recomputed chunk by chunk,
    as the chunked kernel does it, not by the plain row function on the whole logits."""
    _compiled_as(monkeypatch, row_statistics="plain", row_gradient=_past_the_limit)
    monkeypatch.setattr(dispatch, "_past_limit", ["reported"])
    torch.manual_seed(0)
    logits = torch.randn(*_WIDE, requires_grad=True)
    targets = torch.randint(0, _WIDE[1], (_WIDE[0],))
    grad_out = torch.rand(_WIDE[0])
    with ls.kernels.use_backend("inductor"):
        loss = ls.cross_entropy(logits, targets, alpha=0.1, reduction="none")
        count = _buffers_of_the_logits_size(lambda: loss.backward(grad_out))
    assert count == 1
    expected = logits.detach().clone().requires_grad_()
    F.cross_entropy(expected, targets, label_smoothing=0.1, reduction="none").backward(grad_out)
    torch.testing.assert_close(logits.grad, expected.grad)


def test_a_failed_compilation_in_the_backward_falls_back_like_the_forward(monkeypatch):
    """Per-row losses: the forward keeps row statistics, the backward computes the gradient."""
    _compiled_as(monkeypatch, row_statistics="plain", row_gradient=_compile_failure)
    with ls.kernels.use_backend("inductor"):
        with pytest.warns(RuntimeWarning, match="compiling the fused kernel failed on cpu"):
            ours = _loss_and_grad(lambda z, t: ls.cross_entropy(z, t, alpha=0.1, reduction="none").sum())
        assert ls.kernels.backend("cpu") == "chunked"
    expected = _loss_and_grad(lambda z, t: F.cross_entropy(z, t, label_smoothing=0.1, reduction="sum"))
    _assert_matches(ours, expected)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_a_failed_compilation_in_the_linear_kernel_falls_back_to_plain_rows(monkeypatch, reduction):
    _compiled_as(monkeypatch, fused_rows=_compile_failure, row_statistics=_compile_failure)
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    targets = torch.randint(0, 11, (300,))
    grad_out = torch.rand(300) if reduction == "none" else torch.tensor(0.5)
    with ls.kernels.use_backend("inductor"), pytest.warns(RuntimeWarning, match="compiling the fused"):
        ls.linear_cross_entropy(hidden, weight, targets, alpha=0.1, reduction=reduction,
                                chunk_size=128).backward(grad_out)
    expected_hidden = hidden.detach().clone().requires_grad_()
    expected_weight = weight.detach().clone().requires_grad_()
    F.cross_entropy(expected_hidden @ expected_weight.T, targets, label_smoothing=0.1,
                    reduction=reduction).backward(grad_out)
    torch.testing.assert_close(hidden.grad, expected_hidden.grad)
    torch.testing.assert_close(weight.grad, expected_weight.grad)


def test_backward_outputs_are_named_after_the_forward_arguments():
    from labelsmooth.kernels.fused import FusedIndexCrossEntropy

    arguments = rowmath.forward_arguments(FusedIndexCrossEntropy)
    assert arguments[:3] == ("logits", "targets", "target_weights") and len(arguments) == 11
    grad = torch.ones(2)
    gradients = rowmath.input_gradients(arguments, logits=grad)
    assert gradients[0] is grad and gradients[1:] == (None,) * 10
    with pytest.raises(TypeError, match=r"input_gradients: expected names from .*, got 'logit'"):
        rowmath.input_gradients(arguments, logit=grad)

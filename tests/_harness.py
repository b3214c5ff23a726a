"""One contract for every loss, checked the same way (torchmetrics' shared tester, in small).

A :class:`LossCase` names a loss function, its module, how to make inputs in a
given dtype, and an independent reference (PyTorch, or the float64 oracle in
``_reference``). The ``check_*`` functions take a case and assert one property:

* the function and the module agree (:func:`check_function_equals_module`);
* the module pickles, and the copy gives the same loss and repr (:func:`check_pickle`);
* float64 gradients pass ``torch.autograd.gradcheck`` (:func:`check_gradcheck`);
* float16 and bfloat16 inputs give finite losses and gradients, computed in
  float32, equal to the reference on the same rounded inputs (:func:`check_half_precision`);
* with an incoming gradient that is not 1 (the "not last layer" case), the
  gradients equal the reference's (:func:`check_grad_output`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

Inputs = tuple[Tensor | None, ...]


@dataclass(frozen=True)
class LossCase:
    """A loss, seen from the outside.

    ``function(inputs, options)`` and ``reference(inputs, options)`` compute the
    loss; ``module(options)`` builds the module and ``forward(module, inputs)``
    calls it. ``inputs(dtype)`` returns fresh tensors whose floating-point
    entries have ``dtype``; ``grad_inputs`` are the positions that get gradients.
    ``options`` holds everything but ``reduction``, which each check sets.
    """

    name: str
    function: Callable[[Inputs, dict], Tensor]
    module: Callable[[dict], nn.Module]
    reference: Callable[[Inputs, dict], Tensor]
    inputs: Callable[[torch.dtype], Inputs]
    options: dict = field(default_factory=dict)
    reductions: tuple[str, ...] = ("none", "mean", "sum")
    grad_inputs: tuple[int, ...] = (0,)
    forward: Callable[[nn.Module, Inputs], Tensor] = lambda module, inputs: module(*inputs)


def _with(case: LossCase, reduction: str) -> dict:
    return {**case.options, "reduction": reduction}


def _leaves(inputs: Inputs, positions: tuple[int, ...]) -> Inputs:
    """``inputs`` with fresh leaf copies, requiring gradients, at ``positions``."""
    return tuple(
        x.detach().clone().requires_grad_() if i in positions and x is not None else x
        for i, x in enumerate(inputs)
    )


def _grads(inputs: Inputs, positions: tuple[int, ...]) -> list[Tensor]:
    grads = [inputs[i].grad for i in positions]
    assert all(g is not None for g in grads)
    return grads


def check_function_equals_module(case: LossCase, reduction: str) -> None:
    options = _with(case, reduction)
    inputs = case.inputs(torch.float64)
    torch.testing.assert_close(case.forward(case.module(options), inputs), case.function(inputs, options))


def check_pickle(case: LossCase) -> None:
    options = _with(case, case.reductions[-1])
    module = case.module(options)
    copy = pickle.loads(pickle.dumps(module))
    assert type(copy) is type(module) and repr(copy) == repr(module)
    inputs = case.inputs(torch.float64)
    torch.testing.assert_close(case.forward(copy, inputs), case.forward(module, inputs))


def check_gradcheck(case: LossCase, reduction: str) -> None:
    options = _with(case, reduction)
    inputs = case.inputs(torch.float64)

    def loss(*leaves: Tensor) -> Tensor:
        given = list(inputs)
        for position, leaf in zip(case.grad_inputs, leaves, strict=True):
            given[position] = leaf
        return case.function(tuple(given), options)

    leaves = [inputs[i].detach().clone().requires_grad_() for i in case.grad_inputs]
    assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-5)


def check_half_precision(case: LossCase, dtype: torch.dtype) -> None:
    options = _with(case, "mean" if "mean" in case.reductions else case.reductions[0])
    ours_in = _leaves(case.inputs(dtype), case.grad_inputs)
    loss = case.function(ours_in, options)
    assert loss.dtype == torch.float32, "16-bit inputs are computed in float32"
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    for grad in _grads(ours_in, case.grad_inputs):
        assert torch.isfinite(grad).all()
    # The reference on the same rounded inputs, upcast: only the arithmetic's precision differs.
    upcast = tuple(x.float() if x is not None and x.is_floating_point() else x for x in case.inputs(dtype))
    torch.testing.assert_close(loss.detach(), case.reference(upcast, options).float(), rtol=1e-3, atol=1e-4)


def check_grad_output(case: LossCase, reduction: str) -> None:
    options = _with(case, reduction)
    inputs = case.inputs(torch.float64)
    ours_in, ref_in = _leaves(inputs, case.grad_inputs), _leaves(inputs, case.grad_inputs)
    ours, ref = case.function(ours_in, options), case.reference(ref_in, options)
    torch.testing.assert_close(ours, ref)
    generator = torch.Generator().manual_seed(0)
    grad_output = torch.rand(ref.shape, generator=generator, dtype=ref.dtype) * 3 + 0.5  # never 1
    ours.backward(grad_output)
    ref.backward(grad_output)
    expected = _grads(ref_in, case.grad_inputs)
    for got, want in zip(_grads(ours_in, case.grad_inputs), expected, strict=True):
        torch.testing.assert_close(got, want)

"""Every loss and its module against one contract (``_harness``): function == module, pickling,
float64 gradcheck, finite 16-bit results, and gradients under an incoming gradient that is not 1.

The references are independent of the library: PyTorch's own losses, or the dense
float64 formulas of ``_reference``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth as ls
from _harness import (
    LossCase,
    check_function_equals_module,
    check_grad_output,
    check_gradcheck,
    check_half_precision,
    check_pickle,
)

ALPHA = 0.1
IGNORE = -100


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _index_inputs(dtype: torch.dtype):
    g = _generator(1)
    logits = (torch.randn(4, 5, 3, generator=g, dtype=torch.float64) * 2).to(dtype)
    targets = torch.randint(0, 5, (4, 3), generator=g)
    targets[0, 1] = targets[2, 0] = IGNORE
    return logits, targets


def _dense_inputs(dtype: torch.dtype):
    g = _generator(2)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64).to(dtype)
    probs = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), 1)
    return logits, probs


def _binary_inputs(dtype: torch.dtype):
    g = _generator(3)
    logits = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 3).to(dtype)
    return logits, (torch.rand(5, 3, generator=g) < 0.5).double()


def _segmentation_inputs(dtype: torch.dtype):
    g = _generator(4)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).to(dtype)
    return logits, torch.randint(0, 3, (2, 4, 4), generator=g)


def _linear_inputs(dtype: torch.dtype):
    g = _generator(5)
    hidden = torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(7, 4, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    bias = (torch.randn(7, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    targets = torch.randint(0, 7, (6,), generator=g)
    targets[3] = IGNORE
    return hidden, weight, targets, bias


def _like(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    return None if weight is None else weight.to(logits.dtype)


def _dice_reference(inputs, options):
    logits, targets = inputs
    q = ref.smooth(ref.one_hot(targets, logits.shape[1], dim=1), options["alpha"], dim=1)
    per_class = ref.dice_loss(logits, q)
    reduction = options["reduction"]
    return per_class if reduction == "none" else getattr(per_class, reduction)()


def _dice_ce_reference(inputs, options):
    logits, targets = inputs
    ce = F.cross_entropy(logits, targets, label_smoothing=options["alpha"], reduction=options["reduction"])
    return options["lambda_ce"] * ce + options["lambda_dice"] * _dice_reference(inputs, options)


CROSS_ENTROPY = LossCase(
    "cross_entropy",
    function=lambda x, o: ls.cross_entropy(*x, **o),
    module=lambda o: ls.CrossEntropyLoss(**o),
    reference=lambda x, o: F.cross_entropy(
        x[0], x[1], weight=_like(o["weight"], x[0]), ignore_index=o["ignore_index"],
        label_smoothing=o["alpha"], reduction=o["reduction"],
    ),
    inputs=_index_inputs,
    options={"alpha": ALPHA, "weight": torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25]), "ignore_index": IGNORE},
)
SOFT_CROSS_ENTROPY = LossCase(
    "soft_cross_entropy",
    function=lambda x, o: ls.soft_cross_entropy(*x, **o),
    module=lambda o: ls.CrossEntropyLoss(**o),
    # Normalized rows: PyTorch's mean over rows equals the mean over the targets' mass.
    reference=lambda x, o: F.cross_entropy(x[0], x[1].to(x[0].dtype), reduction=o["reduction"]),
    inputs=_dense_inputs,
)
BINARY = LossCase(
    "binary_cross_entropy_with_logits",
    function=lambda x, o: ls.binary_cross_entropy_with_logits(*x, **o),
    module=lambda o: ls.BCEWithLogitsLoss(**o),
    reference=lambda x, o: F.binary_cross_entropy_with_logits(
        x[0], (x[1] * (1 - o["alpha"]) + o["alpha"] / 2).to(x[0].dtype),
        pos_weight=_like(o["pos_weight"], x[0]), reduction=o["reduction"],
    ),
    inputs=_binary_inputs,
    options={"alpha": ALPHA, "pos_weight": torch.tensor([1.0, 2.0, 0.5])},
)
DICE = LossCase(
    "dice_loss",
    function=lambda x, o: ls.dice_loss(*x, **o),
    module=lambda o: ls.DiceLoss(**o),
    reference=_dice_reference,
    inputs=_segmentation_inputs,
    options={"alpha": ALPHA},
)
DICE_CE = LossCase(
    "DiceCE",
    # The module's documented meaning: lambda_ce * cross_entropy + lambda_dice * dice_loss.
    function=lambda x, o: o["lambda_ce"] * ls.cross_entropy(*x, alpha=o["alpha"], reduction=o["reduction"])
    + o["lambda_dice"] * ls.dice_loss(*x, alpha=o["alpha"], reduction=o["reduction"]),
    module=lambda o: ls.DiceCELoss(**o),
    reference=_dice_ce_reference,
    inputs=_segmentation_inputs,
    options={"alpha": ALPHA, "lambda_ce": 1.0, "lambda_dice": 0.5},
    reductions=("mean", "sum"),
)
LINEAR = LossCase(
    "linear_cross_entropy",
    function=lambda x, o: ls.linear_cross_entropy(x[0], x[1], x[2], linear_bias=x[3], **o),
    module=lambda o: ls.LinearCrossEntropyLoss(**o),
    forward=lambda module, x: module(*x),
    reference=lambda x, o: F.cross_entropy(
        F.linear(x[0], x[1], x[3]), x[2], ignore_index=o["ignore_index"], label_smoothing=o["alpha"],
        reduction=o["reduction"],
    ),
    inputs=_linear_inputs,
    # Three rows a chunk: the module passes chunk_size on, and 6 rows take two chunks.
    options={"alpha": ALPHA, "ignore_index": IGNORE, "chunk_size": 3},
    grad_inputs=(0, 1, 3),
)

CASES = [CROSS_ENTROPY, SOFT_CROSS_ENTROPY, BINARY, DICE, DICE_CE, LINEAR]


def _by_reduction():
    return [pytest.param(case, reduction, id=f"{case.name}-{reduction}") for case in CASES
            for reduction in case.reductions]


@pytest.mark.parametrize(("case", "reduction"), _by_reduction())
def test_function_equals_module(case, reduction):
    check_function_equals_module(case, reduction)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_module_pickles(case):
    check_pickle(case)


@pytest.mark.parametrize(("case", "reduction"), _by_reduction())
def test_float64_gradcheck(case, reduction):
    check_gradcheck(case, reduction)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_16_bit_inputs_give_finite_float32_results(case, dtype):
    check_half_precision(case, dtype)


@pytest.mark.parametrize(("case", "reduction"), _by_reduction())
def test_gradients_under_an_incoming_gradient_that_is_not_one(case, reduction):
    check_grad_output(case, reduction)


def test_the_harness_catches_a_wrong_gradient():
    """A loss whose backward is off by a factor fails the grad_output check (the check can fail)."""

    class Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    wrong = LossCase(
        "wrong",
        function=lambda x, o: ls.cross_entropy(Doubled.apply(x[0]), x[1], **o),
        module=lambda o: ls.CrossEntropyLoss(**o),
        reference=CROSS_ENTROPY.reference,
        inputs=_index_inputs,
        options=CROSS_ENTROPY.options,
    )
    with pytest.raises(AssertionError):
        check_grad_output(wrong, "mean")

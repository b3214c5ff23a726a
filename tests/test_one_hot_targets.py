"""Integer and bool one-hot targets of the logits' shape are dense targets, cast to floats.

Composer's tests pass ``F.one_hot(y, C)`` (int64) and MONAI passes uint8 maps;
an integer tensor with the logits' shape can only be a one-hot. Each loss must
give what PyTorch gives for the index targets the one-hot encodes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import labelsmooth as ls
from labelsmooth import CutMix, Engine, Event, LabelSmoothing, MixUp, State

DTYPES = [torch.int64, torch.int32, torch.uint8, torch.bool]
DTYPE_IDS = ["int64", "int32", "uint8", "bool"]


def _classification(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    return logits, y


def _segmentation(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    return logits, y, F.one_hot(y, 3).movedim(-1, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("alpha", [0.0, 0.1], ids=["plain", "smoothed"])
def test_cross_entropy_on_an_integer_one_hot_equals_pytorch_on_the_indices(dtype, alpha):
    logits, y = _classification()
    onehot = F.one_hot(y, 5).to(dtype)
    before = onehot.clone()
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = ls.cross_entropy(ours_in, onehot, alpha=alpha)
    ref = F.cross_entropy(ref_in, y, label_smoothing=alpha)
    torch.testing.assert_close(ours, ref)
    ours.backward(torch.tensor(1.7, dtype=torch.float64))
    ref.backward(torch.tensor(1.7, dtype=torch.float64))
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert ours.dtype == torch.float64
    assert torch.equal(onehot, before) and onehot.dtype == dtype  # the caller's tensor is untouched


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_smooth_labels_and_ensure_one_hot_cast_to_the_logits_dtype(dtype):
    logits, y = _classification()
    onehot = F.one_hot(y, 5).to(dtype)
    expected = 0.9 * F.one_hot(y, 5).double() + 0.1 / 5
    torch.testing.assert_close(ls.smooth_labels(logits, onehot, 0.1), expected)
    dense = ls.ensure_targets_one_hot(logits.float(), onehot)
    assert dense.dtype == torch.float32
    torch.testing.assert_close(dense, F.one_hot(y, 5).float())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool], ids=["uint8", "int64", "bool"])
def test_dice_and_dice_ce_on_a_uint8_map_equal_the_index_map(dtype):
    """MONAI's pattern: a one-hot uint8 segmentation map of shape (N, C, H, W)."""
    logits, y, onehot = _segmentation()
    onehot = onehot.to(dtype)
    torch.testing.assert_close(ls.dice_loss(logits, onehot, alpha=0.1), ls.dice_loss(logits, y, alpha=0.1))
    loss = ls.DiceCELoss(alpha=0.1)
    torch.testing.assert_close(loss(logits, onehot), loss(logits, y))
    torch.testing.assert_close(
        ls.soft_cross_entropy(logits, onehot), F.cross_entropy(logits, y)
    )


@pytest.mark.parametrize(
    "make", [lambda: MixUp(0.4, seed=2), lambda: CutMix(1.0, seed=2)], ids=["MixUp", "CutMix"]
)
def test_mixing_a_composer_one_hot_gives_float_targets(make):
    """Composer's algorithm tests hand the batch F.one_hot(y) targets."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, 4, 4, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    onehot = F.one_hot(y, 5)
    logits = torch.randn(6, 5, generator=g)
    algorithm = make()
    state = State(batch=(x, onehot))
    engine = Engine(state, [algorithm, LabelSmoothing(0.1)])
    engine.run_event(Event.BEFORE_FORWARD)
    state.outputs = logits
    with engine.loss_events():
        target = state.batch[1]
        state.loss = F.cross_entropy(logits, target)
    lam, perm = algorithm.mixing, algorithm.permutation
    q = F.one_hot(y, 5).float()
    expected = 0.9 * ((1 - lam) * q + lam * q[perm]) + 0.1 / 5
    assert target.dtype == torch.float32
    torch.testing.assert_close(target, expected)
    assert state.batch[1] is onehot


@pytest.mark.parametrize(
    "call",
    [
        lambda t: ls.cross_entropy(torch.zeros(2, 3), t),
        lambda t: ls.smooth_labels(torch.zeros(2, 3), t, 0.1),
        lambda t: ls.dice_loss(torch.zeros(2, 3), t),
    ],
    ids=["cross_entropy", "smooth_labels", "dice_loss"],
)
def test_an_integer_tensor_that_is_not_a_one_hot_is_refused(call):
    counts = torch.tensor([[2, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"^targets: expected 0 or 1 in an integer one-hot .*got 2$"):
        call(counts)


def test_complex_dense_targets_are_refused():
    with pytest.raises(TypeError, match=r"^targets: expected real dense targets"):
        ls.cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.complex64))

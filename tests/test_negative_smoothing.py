"""Negative label smoothing (Wei et al., ICML 2022): refused without ``allow_negative=True``; with it,
equal to the float64 formula ``-sum_c q_c log p_c``, ``q = (1 - a) onehot + a u``, loss and gradient.

The oracle is ``_reference`` (dense float64 targets from ``F.one_hot``), never our own code.
PyTorch itself is no oracle here: its ``label_smoothing`` silently trains plain cross-entropy for a
negative value.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import _reference as ref
import labelsmooth as ls
from labelsmooth import kernels, schedules
from labelsmooth.algorithms.state import State
from labelsmooth.distributed import vocab_parallel_cross_entropy

ALPHA = -0.3
C = 5
LOGITS = torch.zeros(3, C)
TARGETS = torch.tensor([0, 4, 2])
HIDDEN, PROJ = torch.zeros(3, 4), torch.zeros(C, 4)

#: The message of a negative alpha without the flag: it names the flag and the paper.
NEEDS_FLAG = r"expected .*allow_negative=True \(negative label smoothing: Wei et al\., .*ICML 2022"

REFUSED = {
    "smooth_labels": lambda: ls.smooth_labels(LOGITS, TARGETS, ALPHA),
    "cross_entropy": lambda: ls.cross_entropy(LOGITS, TARGETS, alpha=ALPHA),
    "cross_entropy-label_smoothing": lambda: ls.cross_entropy(LOGITS, TARGETS, label_smoothing=ALPHA),
    "CrossEntropyLoss": lambda: ls.CrossEntropyLoss(alpha=ALPHA),
    "CrossEntropyLoss-label_smoothing": lambda: ls.CrossEntropyLoss(label_smoothing=ALPHA),
    "linear_cross_entropy": lambda: ls.linear_cross_entropy(HIDDEN, PROJ, TARGETS, alpha=ALPHA),
    "LinearCrossEntropyLoss": lambda: ls.LinearCrossEntropyLoss(alpha=ALPHA),
    "vocab_parallel_cross_entropy": lambda: vocab_parallel_cross_entropy(LOGITS, TARGETS, alpha=ALPHA),
    "LabelSmoothing": lambda: ls.LabelSmoothing(ALPHA),
    "LabelSmoothing-smoothing": lambda: ls.LabelSmoothing(smoothing=ALPHA),
    "LabelSmoothing-schedule": lambda: ls.LabelSmoothing(
        schedules.Linear(0.0, ALPHA, duration=4, allow_negative=True)
    ),
    "Constant": lambda: schedules.Constant(ALPHA),
    "Linear": lambda: schedules.Linear(0.0, ALPHA, duration=4),
    "Cosine": lambda: schedules.Cosine(0.0, ALPHA, duration=4),
    "Step": lambda: schedules.Step(ALPHA, [2]),
    "WarmupDecay": lambda: schedules.WarmupDecay(ALPHA, warmup=1, total=3),
    "SoftTargets.smooth": lambda: ls.SoftTargets.from_index(TARGETS, num_classes=C).smooth(ALPHA),
}


@pytest.mark.parametrize("call", list(REFUSED.values()), ids=list(REFUSED))
def test_negative_alpha_is_refused_without_the_flag(call):
    with pytest.raises(ValueError, match=r"^(alpha|label_smoothing|end|peak): " + NEEDS_FLAG):
        call()


BOUNDED = {
    "smooth_labels": lambda a: ls.smooth_labels(LOGITS, TARGETS, a, allow_negative=True),
    "smooth_labels-others": lambda a: ls.smooth_labels(
        LOGITS, TARGETS, a, convention="others", allow_negative=True
    ),
    "cross_entropy": lambda a: ls.cross_entropy(LOGITS, TARGETS, alpha=a, allow_negative=True),
    "CrossEntropyLoss": lambda a: ls.CrossEntropyLoss(alpha=a, allow_negative=True),
    "LinearCrossEntropyLoss": lambda a: ls.LinearCrossEntropyLoss(alpha=a, allow_negative=True),
    "LabelSmoothing": lambda a: ls.LabelSmoothing(a, allow_negative=True),
    "Linear": lambda a: schedules.Linear(0.0, a, duration=4, allow_negative=True),
}


@pytest.mark.parametrize("call", list(BOUNDED.values()), ids=list(BOUNDED))
def test_the_flag_allows_down_to_minus_one_and_no_further(call):
    call(-1.0)
    with pytest.raises(ValueError, match=r"^(alpha|end): expected a real number in \[-1, 1\].*got -1.01"):
        call(-1.01)


def test_the_flag_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^allow_negative: expected True or False, got 1"):
        ls.cross_entropy(LOGITS, TARGETS, alpha=ALPHA, allow_negative=1)


def make(rows=7, num_classes=C, *, seed=0, dtype=torch.float32, ignore_every=3):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, num_classes, generator=generator, dtype=torch.float64) * 2).to(dtype)
    targets = torch.randint(0, num_classes, (rows,), generator=generator)
    targets[::ignore_every] = -100
    return logits, targets


def others_target(targets, num_classes, alpha):
    """``1 - alpha`` on the true class, ``alpha / (C - 1)`` on each other one; ignored rows all zero."""
    onehot = ref.one_hot(targets, num_classes)
    valid = (targets != -100).double().unsqueeze(-1)
    return (1 - alpha) * onehot + alpha / (num_classes - 1) * (valid - onehot)


def reference_loss_and_grad(logits, q, reduction, grad_output=None, weight=None):
    x = logits.detach().double().requires_grad_()
    loss = ref.cross_entropy(x, q, weight=weight, reduction=reduction)
    loss.backward(grad_output)
    return loss.detach(), x.grad


@pytest.mark.parametrize("convention", ["uniform", "others"])
def test_smooth_labels_equals_the_formula(convention):
    logits, targets = make()
    ours = ls.smooth_labels(logits.double(), targets, ALPHA, ignore_index=-100, convention=convention,
                            allow_negative=True)
    onehot = ref.one_hot(targets, C)
    expected = ref.smooth(onehot, ALPHA) if convention == "uniform" else others_target(targets, C, ALPHA)
    torch.testing.assert_close(ours, expected)
    assert (ours[targets != -100].sum(1) - 1).abs().max() < 1e-12  # mass kept, entries below 0


@pytest.fixture(params=["chunked", "inductor"])
def backend(request):
    with kernels.use_backend(request.param):
        yield request.param


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_index_targets_equal_the_formula_on_each_backend(backend, reduction):
    logits, targets = make()
    x = logits.clone().requires_grad_()
    loss = ls.cross_entropy(x, targets, alpha=ALPHA, reduction=reduction, allow_negative=True)
    grad_output = torch.linspace(0.5, 2.0, len(targets), dtype=torch.float64) if reduction == "none" else None
    loss.backward(None if grad_output is None else grad_output.float())
    expected, expected_grad = reference_loss_and_grad(logits, ref.smooth(ref.one_hot(targets, C), ALPHA),
                                                      reduction, grad_output)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), expected_grad, rtol=1e-5, atol=1e-6)


def test_linear_cross_entropy_equals_the_formula_on_each_backend(backend):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 6, generator=generator)
    proj, bias = torch.randn(C, 6, generator=generator) / 2, torch.randn(C, generator=generator)
    _, targets = make(9)
    ours_in = [t.clone().requires_grad_() for t in (hidden, proj, bias)]
    loss = ls.linear_cross_entropy(ours_in[0], ours_in[1], targets, linear_bias=ours_in[2], alpha=ALPHA,
                                   allow_negative=True, chunk_size=4)
    loss.backward()
    theirs_in = [t.double().requires_grad_() for t in (hidden, proj, bias)]
    q = ref.smooth(ref.one_hot(targets, C), ALPHA)
    expected = ref.cross_entropy(F.linear(*theirs_in), q)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(ours_in, theirs_in, strict=True):
        torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_others_convention_equals_its_formula(reduction):
    logits, targets = make(dtype=torch.float64)
    x = logits.clone().requires_grad_()
    loss = ls.cross_entropy(x, targets, alpha=-1.0, convention="others", reduction=reduction,
                            allow_negative=True)
    loss.backward(torch.ones_like(loss))
    expected, expected_grad = reference_loss_and_grad(logits, others_target(targets, C, -1.0), reduction,
                                                      torch.ones_like(loss))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, expected_grad)


def test_class_weights_follow_pytorchs_index_rule():
    """Rows are ``-sum_c w_c q_c log p_c``; the mean divides by ``sum_i w_{y_i}``, which a negative
    alpha cannot bring to 0."""
    logits, targets = make(dtype=torch.float64)
    weight = torch.linspace(0.2, 2.0, C, dtype=torch.float64)
    q = ref.smooth(ref.one_hot(targets, C), ALPHA)
    rows = ref.cross_entropy_rows(logits, q, weight=weight)
    valid = targets != -100
    expected = rows.sum() / weight[targets[valid]].sum()
    ours = ls.cross_entropy(logits, targets, alpha=ALPHA, weight=weight, allow_negative=True)
    torch.testing.assert_close(ours, expected)
    none = ls.cross_entropy(logits, targets, alpha=ALPHA, weight=weight, reduction="none",
                            allow_negative=True)
    torch.testing.assert_close(none, rows)


def test_dense_and_soft_targets_equal_the_formula():
    logits, targets = make(dtype=torch.float64, ignore_every=10)
    perm = torch.arange(len(targets)).flip(0)
    soft = ls.SoftTargets.from_index(targets, num_classes=C).mix(perm, 0.25)
    mixed = 0.75 * ref.one_hot(targets, C) + 0.25 * ref.one_hot(targets[perm], C)
    expected = ref.cross_entropy(logits, ref.smooth(mixed, ALPHA))
    for given in (soft, soft.to_dense(dtype=torch.float64)):
        ours = ls.cross_entropy(logits, given, alpha=ALPHA, allow_negative=True)
        torch.testing.assert_close(ours, expected)


def test_gradcheck_float64():
    logits, targets = make(dtype=torch.float64)
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: ls.cross_entropy(z, targets, alpha=-0.7, reduction="none", allow_negative=True), (x,)
    )


def test_vocab_parallel_on_one_rank_equals_the_formula():
    logits, targets = make(dtype=torch.float64)
    x = logits.clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(x, targets, alpha=ALPHA, allow_negative=True)
    loss.backward()
    expected, expected_grad = reference_loss_and_grad(logits, ref.smooth(ref.one_hot(targets, C), ALPHA),
                                                      "mean")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(x.grad, expected_grad)


def test_modules_equal_their_functions_and_pickle():
    logits, targets = make(dtype=torch.float64)
    module = ls.CrossEntropyLoss(alpha=ALPHA, allow_negative=True)
    copy = pickle.loads(pickle.dumps(module))
    assert repr(copy) == repr(module) and "allow_negative=True" in repr(module)
    expected = ls.cross_entropy(logits, targets, alpha=ALPHA, allow_negative=True)
    torch.testing.assert_close(copy(logits, targets), expected)
    hidden, proj = torch.randn(7, 3, dtype=torch.float64), torch.randn(C, 3, dtype=torch.float64)
    linear = pickle.loads(pickle.dumps(ls.LinearCrossEntropyLoss(alpha=ALPHA, allow_negative=True)))
    torch.testing.assert_close(
        linear(hidden, proj, targets),
        ls.linear_cross_entropy(hidden, proj, targets, alpha=ALPHA, allow_negative=True),
    )


@pytest.mark.parametrize("gap", [10.0, 100.0, 1000.0])
def test_the_loss_is_unbounded_below(gap):
    """The true class at 0 and every other logit at ``-gap``: the loss tends to ``a (C - 1) / C * gap``,
    below any bound for ``a < 0``, while plain cross-entropy stays above 0."""
    logits = torch.full((1, C), -gap, dtype=torch.float64)
    logits[0, 0] = 0.0
    target = torch.tensor([0])
    loss = ls.cross_entropy(logits, target, alpha=ALPHA, allow_negative=True)
    expected = ref.cross_entropy(logits, ref.smooth(ref.one_hot(target, C), ALPHA))
    torch.testing.assert_close(loss, expected)
    assert loss.item() == pytest.approx(ALPHA * (C - 1) / C * gap, rel=1e-3)
    assert ls.cross_entropy(logits, target).item() >= 0


def test_two_negative_smoothings_cannot_compound_below_minus_one():
    soft = ls.SoftTargets.from_index(TARGETS, num_classes=C).smooth(-0.5, allow_negative=True)
    assert soft.alpha == -0.5
    with pytest.raises(ValueError, match=r"^alpha: expected a combined smoothing .* >= -1 .*got '-1.25"):
        soft.smooth(-0.5, allow_negative=True)
    with pytest.raises(ValueError, match=r"^alpha: expected a combined smoothing"):
        ls.cross_entropy(LOGITS, soft, alpha=-0.5, allow_negative=True)


def test_schedules_reach_negative_values_with_the_flag():
    linear = schedules.Linear(0.0, -0.2, duration=4, unit="epoch", allow_negative=True)
    assert [linear.value(t) for t in (0, 2, 4, 9)] == pytest.approx([0.0, -0.1, -0.2, -0.2])
    cosine = schedules.Cosine(0.0, -0.2, duration=4, allow_negative=True)
    assert [cosine.value(t) for t in (0, 2, 4)] == pytest.approx([0.0, -0.1, -0.2])
    assert schedules.Step(-0.1, [2], gamma=2.0, allow_negative=True).value(3) == pytest.approx(-0.2)
    warmup = schedules.WarmupDecay(-0.2, warmup=2, total=4, end=-0.2, allow_negative=True)
    assert warmup.value(1) == pytest.approx(-0.1)
    assert repr(linear) == "Linear(start=0.0, end=-0.2, duration=4, allow_negative=True, unit='epoch')"
    with pytest.raises(ValueError, match=r"^gamma: expected a factor that keeps alpha in \[-1, 1\]"):
        schedules.Step(-0.6, [2], gamma=2.0, allow_negative=True)


@pytest.mark.parametrize("materialize", [True, False], ids=["dense", "soft"])
def test_label_smoothing_warm_up_from_plain_cross_entropy(materialize):
    """Wei et al.'s recipe: plain targets at epoch 0, then down to alpha = -0.2 by epoch 2."""
    warmup = schedules.Linear(0.0, -0.2, duration=2, unit="epoch", allow_negative=True)
    algorithm = ls.LabelSmoothing(warmup, allow_negative=True, materialize=materialize, ignore_index=-100)
    logits, targets = make(dtype=torch.float64)
    for epoch, alpha in ((0, 0.0), (1, -0.1), (2, -0.2)):
        state = State(batch=(None, targets), outputs=logits, epoch=epoch)
        with ls.Engine(state, [algorithm]).loss_events():
            smoothed = state.batch[1]
            loss = ls.cross_entropy(logits, smoothed, allow_negative=True)
            if alpha < 0:  # the loss takes negatively smoothed targets only under the same flag
                with pytest.raises(ValueError, match=r"^targets: expected"):
                    ls.cross_entropy(logits, smoothed)
        expected = ref.cross_entropy(logits, ref.smooth(ref.one_hot(targets, C), alpha))
        torch.testing.assert_close(loss, expected)
        assert state.batch[1] is targets


def test_label_smoothing_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match=r"^allow_negative: expected False with task='multilabel'"):
        ls.LabelSmoothing(ALPHA, task="multilabel", allow_negative=True)
    # "others" at -1 is "uniform" at -C / (C - 1), past what SoftTargets hold.
    algorithm = ls.LabelSmoothing(-1.0, convention="others", materialize=False, allow_negative=True)
    state = State(batch=(None, TARGETS), outputs=LOGITS)
    beyond = r"^alpha: expected a value in \[-0.8, 0.8\] with convention='others'"
    with pytest.raises(ValueError, match=beyond), ls.Engine(state, [algorithm]).loss_events():
        pass


def test_online_label_smoothing_has_no_negative_smoothing():
    with pytest.raises(ValueError, match=r"^alpha: expected a real number in \[0, 1\], got -0.3$"):
        ls.OnlineLabelSmoothing(ALPHA)
    negative = schedules.Linear(0.0, ALPHA, duration=4, allow_negative=True)
    with pytest.raises(ValueError, match=r"^alpha: expected a schedule with values in \[0, 1\]"):
        ls.OnlineLabelSmoothing(negative)


class _Sign(schedules.Schedule):
    """A schedule of a user's own that does not state its range: -0.2 from step 1 on."""

    def __init__(self, *, allow_negative=False):
        super().__init__("step", allow_negative)

    @property
    def hparams(self):
        return {}

    def value(self, t):
        return -0.2 if t else 0.0


def test_a_users_schedule_is_checked_at_each_step():
    claims_negative = _Sign(allow_negative=True)
    with pytest.raises(ValueError, match=r"^alpha: expected a schedule with values in \[0, 1\], or allow"):
        ls.LabelSmoothing(claims_negative)
    algorithm = ls.LabelSmoothing(_Sign())  # it claims nothing negative, and gives -0.2 anyway
    state = State(batch=(None, TARGETS), outputs=LOGITS, step=1)
    engine = ls.Engine(state, [algorithm])
    with pytest.raises(ValueError, match=r"^alpha: " + NEEDS_FLAG), engine.loss_events():
        pass
    assert state.batch[1] is TARGETS
    allowed = ls.LabelSmoothing(_Sign(allow_negative=True), allow_negative=True)
    with ls.Engine(state, [allowed]).loss_events():
        torch.testing.assert_close(state.batch[1].double(), ref.smooth(ref.one_hot(TARGETS, C), -0.2))

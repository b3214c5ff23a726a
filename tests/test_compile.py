"""Every loss traces under ``torch.compile(fullgraph=True)``: no graph break, no host sync, eager results.

Oracle: the same call in eager mode, which the other test files check against
PyTorch and the dense float64 formula. A compiled result must equal it (loss
and every gradient) within float32 tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import labelsmooth as ls

C = 7


def _index_case(dtype=torch.float32, shape=(6,), dim=1, **options):
    torch.manual_seed(0)
    logits_shape = (*shape[:dim], C, *shape[dim:]) if dim != -1 else (*shape, C)
    logits = torch.randn(logits_shape).to(dtype)
    targets = torch.randint(0, C, shape)
    targets.view(-1)[::3] = -100
    return (logits,), targets, options


def _weight():
    return torch.linspace(0.5, 2.0, C)


def _prior():
    return torch.softmax(torch.linspace(-1.0, 1.0, C), 0)


def _soft_targets(targets):
    soft = ls.SoftTargets.from_index(targets.clamp(min=0), num_classes=C)
    return soft.mix(torch.arange(targets.shape[0]).flip(0), 0.3).smooth(0.1)


def _linear_inputs():
    torch.manual_seed(0)
    return torch.randn(5, 3, 4), torch.randn(C, 4) / 2, torch.randint(0, C, (5, 3))


CASES = {
    "index": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.1}),
    "negative-alpha": lambda: ("cross_entropy", *_index_case(), {"alpha": -0.2, "allow_negative": True}),
    "weight-prior": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.1, "weight": _weight(),
                                                                "prior": _prior()}),
    "others": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.2, "convention": "others",
                                                          "reduction": "sum"}),
    "none": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.1, "reduction": "none"}),
    "btv-dim-1": lambda: ("cross_entropy", *_index_case(shape=(2, 5), dim=-1), {"alpha": 0.1, "dim": -1}),
    "segmentation": lambda: ("cross_entropy", *_index_case(shape=(2, 3, 4)), {"alpha": 0.1}),
    "bfloat16": lambda: ("cross_entropy", *_index_case(torch.bfloat16), {"alpha": 0.1}),
    "float16-weight": lambda: ("cross_entropy", *_index_case(torch.float16), {"alpha": 0.1,
                                                                               "weight": _weight()}),
    "z-loss-softcap": lambda: ("cross_entropy", *_index_case(), {"label_smoothing": 0.1, "z_loss": 1e-2,
                                                                  "softcap": 3.0, "weight": _weight()}),
    "z-loss-none": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.1, "z_loss": 1e-2,
                                                               "reduction": "none"}),
    "softcap-segmentation": lambda: ("cross_entropy", *_index_case(shape=(2, 3, 4)),
                                     {"alpha": 0.1, "softcap": 2.0, "z_loss": 1e-2}),
    "num-items-tensor": lambda: ("cross_entropy", *_index_case(), {"alpha": 0.1, "z_loss": 1e-2,
                                                                    "num_items_in_batch": torch.tensor(9)}),
}


def _run(name):
    fn_name, (logits,), targets, _, kwargs = CASES[name]()
    return getattr(ls, fn_name), logits, targets, kwargs


def _loss_and_grads(fn, tensors, *args, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = fn(*leaves, *args, **kwargs)
    loss.backward(torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape).to(loss.dtype))
    return loss.detach(), [leaf.grad for leaf in leaves]


def _assert_compiled_equals_eager(fn, tensors, *args, **kwargs):
    explained = torch._dynamo.explain(fn)(*tensors, *args, **kwargs)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    eager = _loss_and_grads(fn, tensors, *args, **kwargs)
    compiled = _loss_and_grads(torch.compile(fn, fullgraph=True), tensors, *args, **kwargs)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(compiled[1], eager[1], strict=True):
        tol = {"rtol": 1e-2, "atol": 1e-2} if got.dtype in (torch.float16, torch.bfloat16) else {}
        torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("name", list(CASES), ids=str)
def test_cross_entropy_compiles_without_graph_breaks(name):
    fn, logits, targets, kwargs = _run(name)
    _assert_compiled_equals_eager(fn, [logits], targets, **kwargs)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_soft_targets_path_compiles(alpha):
    (logits,), targets, _ = _index_case()
    _assert_compiled_equals_eager(ls.cross_entropy, [logits], _soft_targets(targets), alpha=alpha)


def test_dense_targets_and_soft_cross_entropy_compile():
    (logits,), _, _ = _index_case()
    dense = torch.softmax(torch.randn(logits.shape), 1)
    _assert_compiled_equals_eager(ls.soft_cross_entropy, [logits], dense)
    _assert_compiled_equals_eager(ls.cross_entropy, [logits], dense, alpha=0.1, weight=_weight())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_compiles(reduction):
    hidden, weight, targets = _linear_inputs()
    _assert_compiled_equals_eager(
        ls.linear_cross_entropy, [hidden, weight], targets, alpha=0.1, reduction=reduction
    )


@pytest.mark.parametrize("num_items", [None, torch.tensor(11)], ids=["mean", "num-items-tensor"])
def test_linear_cross_entropy_with_class_weights_z_loss_and_softcap_compiles(num_items):
    hidden, weight, targets = _linear_inputs()
    _assert_compiled_equals_eager(
        ls.linear_cross_entropy, [hidden, weight], targets, weight=_weight(), label_smoothing=0.1,
        z_loss=1e-2, softcap=2.0, num_items_in_batch=num_items,
    )


@pytest.mark.parametrize("linear", [False, True], ids=["cross_entropy", "linear_cross_entropy"])
def test_returned_z_loss_part_compiles_with_its_gradient(linear):
    # The z part takes a gradient of its own: the backward recomputes, traced too.
    if linear:
        hidden, weight, targets = _linear_inputs()
        tensors = [hidden, weight]

        def fn(h, w, t):
            loss, z = ls.linear_cross_entropy(h, w, t, alpha=0.1, z_loss=0.1, softcap=2.0,
                                              return_z_loss=True)
            return loss + 3 * z
    else:
        (logits,), targets, _ = _index_case()
        tensors = [logits]

        def fn(x, t):
            loss, z = ls.cross_entropy(x, t, alpha=0.1, z_loss=0.1, softcap=2.0, return_z_loss=True)
            return loss + 3 * z
    _assert_compiled_equals_eager(fn, tensors, targets)


def test_modules_compile():
    (logits,), targets, _ = _index_case()
    module = ls.CrossEntropyLoss(alpha=0.1, weight=_weight())
    _assert_compiled_equals_eager(module, [logits], targets)
    hidden, weight, index = _linear_inputs()
    linear_loss = ls.LinearCrossEntropyLoss(alpha=0.1)
    _assert_compiled_equals_eager(lambda h, w, t: linear_loss(h, w, t), [hidden, weight], index)


def test_binary_cross_entropy_and_dice_compile():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    _assert_compiled_equals_eager(ls.binary_cross_entropy_with_logits, [logits], torch.rand(4, 3), alpha=0.1)
    seg = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    _assert_compiled_equals_eager(ls.dice_loss, [seg], labels, alpha=0.1)


def test_compiled_training_step_with_unmaterialized_smoothing_equals_eager():
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randint(0, C, (8,))

    def step(model, loss_fn):
        state = ls.State(batch=(x, y), outputs=model(x))
        engine = ls.Engine(state, [ls.LabelSmoothing(0.1, materialize=False)])
        with engine.loss_events():
            state.loss = loss_fn(state.outputs, state.batch[1])
        state.loss.backward()
        return state.loss.detach(), [p.grad for p in model.parameters()]

    def fresh():
        torch.manual_seed(1)
        return torch.nn.Linear(5, C)

    eager = step(fresh(), ls.cross_entropy)
    compiled = step(fresh(), torch.compile(ls.cross_entropy, fullgraph=True))
    torch.testing.assert_close(compiled[0], eager[0])
    for got, expected in zip(compiled[1], eager[1], strict=True):
        torch.testing.assert_close(got, expected)


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _ops_of_forward_backward(rows, **kwargs):
    logits = torch.randn(rows, 100, requires_grad=True)
    targets = torch.randint(0, 100, (rows,))
    with _OpCounter() as counter:
        ls.cross_entropy(logits, targets, alpha=0.1, **kwargs).sum().backward()
    return counter.ops


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reduction": "none"}, {"weight": torch.rand(100)}, {"z_loss": 1e-2, "softcap": 3.0}],
    ids=["plain", "none", "weight", "z-loss-softcap"],
)
def test_operator_count_does_not_grow_with_the_batch(kwargs):
    small = _ops_of_forward_backward(64, **kwargs)
    large = _ops_of_forward_backward(4096, **kwargs)
    assert len(small) == len(large), (len(small), len(large))


def test_operator_count_of_the_chunked_fallback_grows_with_the_batch():
    # What the test above guards against: one launch sequence per chunk.
    with ls.kernels.use_backend("chunked"):
        small = _ops_of_forward_backward(64)
        large = _ops_of_forward_backward(40_000)
    assert len(large) > len(small)


def test_content_checks_off_means_no_host_sync():
    logits = torch.randn(16, 10, requires_grad=True)
    targets = torch.randint(0, 10, (16,))
    with _OpCounter() as checked:
        ls.cross_entropy(logits, targets, alpha=0.1, weight=torch.rand(10)).backward()
    with ls.content_checks(False), _OpCounter() as unchecked:
        ls.cross_entropy(logits, targets, alpha=0.1, weight=torch.rand(10)).backward()
    assert "aten._local_scalar_dense.default" in checked.ops
    assert "aten._local_scalar_dense.default" not in unchecked.ops


def test_new_options_cause_no_host_sync_with_checks_off():
    """z-loss, softcap and a 0-dim tensor num_items_in_batch read nothing on the host."""
    logits = torch.randn(16, 10, requires_grad=True)
    targets = torch.randint(0, 10, (16,))
    hidden, weight, index = _linear_inputs()
    hidden.requires_grad_()
    options = {"label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 3.0, "num_items_in_batch": torch.tensor(7)}
    with ls.content_checks(False), _OpCounter() as unchecked:
        ls.cross_entropy(logits, targets, weight=torch.rand(10), **options).backward()
        ls.linear_cross_entropy(hidden, weight, index, weight=_weight(), **options).backward()
    assert "aten._local_scalar_dense.default" not in unchecked.ops


def test_content_checks_are_restored_after_the_block():
    bad = torch.tensor([0, 12])
    with ls.content_checks(False):
        pass
    with pytest.raises(ValueError, match=r"targets: expected class indices in \[0, 10\)"):
        ls.cross_entropy(torch.zeros(2, 10), bad)


def test_content_checks_flag_must_be_a_bool():
    with pytest.raises(TypeError, match="enabled: expected True or False"), ls.content_checks("no"):
        pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_matches_pytorch(dtype):
    torch.manual_seed(0)
    logits = torch.randn(300, 1000, device="cuda").to(dtype)
    targets = torch.randint(0, 1000, (300,), device="cuda")
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.float().clone().requires_grad_()
    ours = ls.cross_entropy(ours_in, targets, alpha=0.1)
    ref = F.cross_entropy(ref_in, targets, label_smoothing=0.1)
    ours.backward()
    ref.backward()
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(ours, ref, **tol)
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad, **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiles_without_graph_breaks():
    fn, logits, targets, kwargs = _run("weight-prior")
    _assert_compiled_equals_eager(
        fn, [logits.cuda()], targets.cuda(), **{k: v.cuda() if torch.is_tensor(v) else v
                                                for k, v in kwargs.items()}
    )

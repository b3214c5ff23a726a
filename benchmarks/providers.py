"""Benchmark cases and one setup factory per provider (implementation under test).

A provider's ``build(case, device)`` returns a loss function of the case's
inputs; the harness times ``loss.backward()`` included. Every provider of a
case sees the same inputs (same seed). ``build`` raises :class:`Unavailable`
when an optional peer (timm, Liger-Kernel, a torch without
``F.linear_cross_entropy``) cannot run here: the provider is then skipped,
with the reason recorded. Any other failure, at build time or on the first
call (where ``torch.compile`` compiles), is recorded as an error cell.

Names: "compiled" is ``torch.compile`` of the expression; "lce" is PyTorch's
own ``F.linear_cross_entropy``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import labelsmooth as ls

ALPHA = 0.1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class Unavailable(Exception):  # noqa: N818 (a reason to skip, not an error)
    """The provider cannot run in this environment (optional dependency, device)."""


@dataclass(frozen=True)
class Case:
    """``kind``: "ce" (N, C), "seg" (N, C, H, W) with class dim 1, "linear" (N, H) @ (V, H)^T.

    ``latency``: measure the compiling providers' first call (cold and warm cache) on this case.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    repeats: int = 5
    latency: bool = False

    @property
    def num_classes(self) -> int:
        return self.shape[2] if self.kind == "linear" else self.shape[1]

    def logits_bytes(self) -> int:
        """Bytes of the (N, C) logits (for "linear": the logits the fusion avoids)."""
        rows = self.shape[0] if self.kind != "seg" else self.shape[0] * self.shape[2] * self.shape[3]
        return rows * self.num_classes * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Provider:
    """``mutates_logits``: its backward overwrites the logits (restored between runs, untimed).

    ``latency``: it may compile on its first call, so that call is timed in fresh processes.
    """

    name: str
    build: Callable[[Case, str], Loss]
    mutates_logits: bool = False
    latency: bool = False


def make_inputs(case: Case, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """The case's leaves (requiring grad) and targets, drawn on the CPU, then moved to ``device``."""
    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[case.dtype]
    if case.kind == "linear":
        rows, hidden_size, vocab = case.shape
        hidden = torch.randn(rows, hidden_size, generator=generator, dtype=dtype)
        weight = torch.randn(vocab, hidden_size, generator=generator, dtype=dtype).div_(hidden_size**0.5)
        targets = torch.randint(0, vocab, (rows,), generator=generator)
        tensors = {"hidden": hidden, "weight": weight, "targets": targets}
    else:
        logits = torch.randn(case.shape, generator=generator, dtype=dtype)
        index_shape = case.shape[:1] + case.shape[2:]
        targets = torch.randint(0, case.num_classes, index_shape, generator=generator)
        tensors = {"logits": logits, "targets": targets}
    out = {name: tensor.to(device) for name, tensor in tensors.items()}
    for tensor in out.values():
        if tensor.is_floating_point():
            tensor.requires_grad_()
    return out


def _class_last(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (rows, C), a copy for segmentation logits (charged to the peer that needs it)."""
    return logits if logits.dim() == 2 else logits.movedim(1, -1).reshape(-1, logits.shape[1])


def _dense_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Composer's / timm mixup's way: one-hot, smooth, soft cross-entropy (class dim 1)."""
    num_classes = logits.shape[1]
    onehot = F.one_hot(targets, num_classes).movedim(-1, 1).to(logits.dtype)
    smoothed = onehot * (1 - ALPHA) + ALPHA / num_classes
    return -(smoothed * F.log_softmax(logits, dim=1)).sum(1).mean()


def _ours(alpha: float, inplace_backward: bool = False) -> Callable[[Case, str], Loss]:
    def build(case: Case, device: str) -> Loss:
        return lambda x: ls.cross_entropy(x["logits"], x["targets"], alpha=alpha, dim=1,
                                          inplace_backward=inplace_backward)

    return build


def _ours_compiled(case: Case, device: str) -> Loss:
    fn = torch.compile(lambda z, t: ls.cross_entropy(z, t, alpha=ALPHA, dim=1), fullgraph=True)
    return lambda x: fn(x["logits"], x["targets"])


def _torch_compiled(case: Case, device: str) -> Loss:
    fn = torch.compile(lambda z, t: F.cross_entropy(z, t, label_smoothing=ALPHA))
    return lambda x: fn(x["logits"], x["targets"])


def _timm(case: Case, device: str) -> Loss:
    try:
        from timm.loss import LabelSmoothingCrossEntropy
    except ImportError as error:
        raise Unavailable(f"timm is not importable ({error})") from None
    loss = LabelSmoothingCrossEntropy(smoothing=ALPHA)
    # timm's loss takes (N, C) only: segmentation logits are flattened class-last first.
    return lambda x: loss(_class_last(x["logits"]), x["targets"].reshape(-1))


def _liger_module(name: str, device: str) -> Callable[..., torch.nn.Module]:
    if device != "cuda":
        raise Unavailable("Liger-Kernel is Triton: CUDA only")
    try:
        import liger_kernel.transformers as liger
    except ImportError as error:
        raise Unavailable(f"liger_kernel is not importable ({error})") from None
    module: Callable[..., torch.nn.Module] = getattr(liger, name)
    return module


def _liger(case: Case, device: str) -> Loss:
    loss = _liger_module("LigerCrossEntropyLoss", device)(label_smoothing=ALPHA)
    return lambda x: loss(_class_last(x["logits"]), x["targets"].reshape(-1))


CE_PROVIDERS = (
    Provider("labelsmooth", _ours(ALPHA), latency=True),
    Provider("labelsmooth_alpha0", _ours(0.0)),
    Provider("labelsmooth_inplace", _ours(ALPHA, inplace_backward=True), mutates_logits=True),
    Provider("labelsmooth_compiled", _ours_compiled, latency=True),
    Provider("torch_compiled", _torch_compiled, latency=True),
    Provider("torch_label_smoothing", lambda case, device: lambda x: F.cross_entropy(
        x["logits"], x["targets"], label_smoothing=ALPHA)),
    Provider("torch_plain", lambda case, device: lambda x: F.cross_entropy(x["logits"], x["targets"])),
    Provider("dense_targets", lambda case, device: lambda x: _dense_targets(x["logits"], x["targets"])),
    Provider("timm", _timm),
    # Liger's forward writes the gradient into its input: for (N, C) logits, the logits themselves.
    Provider("liger", _liger, mutates_logits=True),
)


def _linear_then_ce(x: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(F.linear(x["hidden"], x["weight"]), x["targets"], label_smoothing=ALPHA)


def _torch_compiled_linear(case: Case, device: str) -> Loss:
    fn = torch.compile(lambda h, w, t: F.cross_entropy(F.linear(h, w), t, label_smoothing=ALPHA))
    return lambda x: fn(x["hidden"], x["weight"], x["targets"])


def _torch_lce(alpha: float) -> Callable[[Case, str], Loss]:
    """``F.linear_cross_entropy`` with its default chunking options (``chunking_method="auto"``).

    For alpha > 0 the chunked op does not apply: torch warns and computes the
    full logits (the warning is silenced here; the fallback is what is measured).
    """

    def build(case: Case, device: str) -> Loss:
        lce = getattr(F, "linear_cross_entropy", None)
        options_type = getattr(torch.nn, "LinearCrossEntropyOptions", None)
        if lce is None or options_type is None:
            raise Unavailable(f"torch {torch.__version__} has no F.linear_cross_entropy")
        options = options_type()
        warnings.filterwarnings("ignore", message="linear_cross_entropy: ``options`` ignored")
        return lambda x: lce(x["hidden"], x["weight"], x["targets"], label_smoothing=alpha, options=options)

    return build


def _liger_linear(case: Case, device: str) -> Loss:
    loss = _liger_module("LigerFusedLinearCrossEntropyLoss", device)(label_smoothing=ALPHA)
    return lambda x: loss(x["weight"], x["hidden"], x["targets"])


def _cce(case: Case, device: str) -> Loss:
    """Apple's Cut Cross-Entropy (``pip install cut-cross-entropy``): no label smoothing, so alpha 0.

    ``impl="cce"``, its Triton kernels, by name: the default falls back to its ``torch.compile``
    version, unannounced, where those fail to import. Its default gradient filter
    (``filter_eps="high"``) stays on, as users run it.
    """
    if device != "cuda":
        raise Unavailable("Cut Cross-Entropy is Triton: CUDA only")
    try:
        from cut_cross_entropy import linear_cross_entropy as cce
    except ImportError as error:
        raise Unavailable(f"cut_cross_entropy is not importable ({error})") from None
    return lambda x: cce(x["hidden"], x["weight"], x["targets"], impl="cce")


def _ours_linear(alpha: float) -> Callable[[Case, str], Loss]:
    # Positional hidden, weight, targets: the keyword names may follow torch's.
    return lambda case, device: lambda x: ls.linear_cross_entropy(
        x["hidden"], x["weight"], x["targets"], alpha=alpha)


LINEAR_PROVIDERS = (
    Provider("labelsmooth_linear", _ours_linear(ALPHA), latency=True),
    Provider("labelsmooth_linear_alpha0", _ours_linear(0.0)),
    Provider("torch_compiled_linear_ce", _torch_compiled_linear, latency=True),
    Provider("torch_linear_then_ce", lambda case, device: _linear_then_ce),
    Provider("torch_lce_chunked_alpha0", _torch_lce(0.0)),
    Provider("torch_lce_alpha0.1", _torch_lce(ALPHA)),
    Provider("liger_fused_linear", _liger_linear),
    Provider("cce_alpha0", _cce),
)

# The peer the ratios are against, and the old eager column, per case kind.
COMPILED_BASELINE = {"ce": "torch_compiled", "seg": "torch_compiled", "linear": "torch_compiled_linear_ce"}
EAGER_BASELINE = {"ce": "torch_label_smoothing", "seg": "torch_label_smoothing",
                  "linear": "torch_linear_then_ce"}


def notes(case: Case, device: str) -> dict[str, str]:
    """What a provider resolved to at this case (the chunk size that "auto" picks), where known."""
    options_type = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if case.kind != "linear" or options_type is None:
        return {}
    rows, hidden_size, vocab = case.shape
    # _adjust is torch's own (private) resolution of "auto", as F.linear_cross_entropy calls it.
    with contextlib.suppress(Exception):
        resolved = options_type()._adjust(rows, hidden_size, vocab, DTYPES[case.dtype],
                                             torch.device(device))
        return {"torch_lce_chunked_alpha0": repr(resolved)}
    return {}


def providers_for(case: Case) -> tuple[Provider, ...]:
    return LINEAR_PROVIDERS if case.kind == "linear" else CE_PROVIDERS


def provider(case: Case, name: str) -> Provider:
    return next(p for p in providers_for(case) if p.name == name)


def reset(inputs: dict[str, torch.Tensor], pristine: torch.Tensor | None) -> None:
    """Drop gradients; restore logits that a provider overwrote (untimed)."""
    for tensor in inputs.values():
        tensor.grad = None
    if pristine is not None:
        with torch.no_grad():
            inputs["logits"].copy_(pristine)


def step(loss_fn: Loss, inputs: dict[str, torch.Tensor]) -> None:
    loss_fn(inputs).backward()


def cases(quick: bool = False, device: str = "cpu") -> list[Case]:
    """The issue's cases; ``quick`` shrinks them for a smoke run. On CUDA, the shapes of issue 20's
    targets come first (a 128256 vocabulary, hidden size 4096; then (4096, 32000) bfloat16), so that
    a run cut short by its time limit has measured them."""
    if quick:
        return [
            Case("ce-512x1000-float32", "ce", (512, 1000), "float32", 3, latency=True),
            Case("ce-256x4000-bfloat16", "ce", (256, 4000), "bfloat16", 3),
            Case("seg-2x150x32x32-float32", "seg", (2, 150, 32, 32), "float32", 3),
            Case("linear-256x64x4000-float32", "linear", (256, 64, 4000), "float32", 3),
        ]
    first = GPU_CASES if device == "cuda" else []
    return first + [case for case in [
        Case("ce-4096x32000-float32", "ce", (4096, 32000), "float32", 5, latency=True),
        CE_4096_BF16,
        Case("ce-2048x128256-bfloat16", "ce", (2048, 128256), "bfloat16", 5),
        Case("ce-8192x1000-float32", "ce", (8192, 1000), "float32", 15),
        Case("seg-8x150x128x128-float32", "seg", (8, 150, 128, 128), "float32", 7),
        Case("linear-4096x1024x32000-float32", "linear", (4096, 1024, 32000), "float32", 3, latency=True),
    ] if case not in first]


CE_4096_BF16 = Case("ce-4096x32000-bfloat16", "ce", (4096, 32000), "bfloat16", 5)
#: Issue 20's GPU targets, in the order a run cut by gpu_check.sh's time limit should have measured them.
GPU_CASES = [
    Case("ce-8192x128256-bfloat16", "ce", (8192, 128256), "bfloat16", 10),
    Case("linear-8192x4096x128256-bfloat16", "linear", (8192, 4096, 128256), "bfloat16", 10),
    CE_4096_BF16,
]

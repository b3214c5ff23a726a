"""Benchmark cases and one setup factory per provider (implementation under test).

A provider maps a case's inputs to a loss; the harness times ``loss.backward()``
included. Every provider of a case sees the same inputs (same seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import labelsmooth

ALPHA = 0.1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """``kind``: "ce" (N, C), "seg" (N, C, H, W) with class dim 1, "linear" (N, H) @ (V, H)^T."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    repeats: int = 5
    providers: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return self.shape[2] if self.kind == "linear" else self.shape[1]

    def logits_bytes(self) -> int:
        """Bytes of the (N, C) logits (for "linear": the logits the fusion avoids)."""
        rows = self.shape[0] if self.kind != "seg" else self.shape[0] * self.shape[2] * self.shape[3]
        return rows * self.num_classes * DTYPES[self.dtype].itemsize

    def small(self) -> Case:
        """A tiny case of the same kind and dtype, to warm code paths up."""
        shape = {"ce": (8, 16), "seg": (2, 5, 3, 3), "linear": (8, 4, 16)}[self.kind]
        return Case(self.name + "-warmup", self.kind, shape, self.dtype, 1, self.providers)


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    dtype = DTYPES[case.dtype]
    if case.kind == "linear":
        rows, hidden_size, vocab = case.shape
        hidden = torch.randn(rows, hidden_size, generator=generator, dtype=dtype)
        weight = torch.randn(vocab, hidden_size, generator=generator, dtype=dtype).div_(hidden_size**0.5)
        targets = torch.randint(0, vocab, (rows,), generator=generator)
        return {"hidden": hidden.requires_grad_(), "weight": weight.requires_grad_(), "targets": targets}
    logits = torch.randn(case.shape, generator=generator, dtype=dtype)
    index_shape = case.shape[:1] + case.shape[2:]
    targets = torch.randint(0, case.num_classes, index_shape, generator=generator)
    return {"logits": logits.requires_grad_(), "targets": targets}


def _dense_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Composer's / timm mixup's way: one-hot, smooth, soft cross-entropy (class dim 1)."""
    num_classes = logits.shape[1]
    onehot = F.one_hot(targets, num_classes).movedim(-1, 1).to(logits.dtype)
    smoothed = onehot * (1 - ALPHA) + ALPHA / num_classes
    return -(smoothed * F.log_softmax(logits, dim=1)).sum(1).mean()


def _timm(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from timm.loss import LabelSmoothingCrossEntropy

    # timm's loss takes (N, C) only: segmentation logits are moved class-last
    # and flattened first (a copy, charged to timm).
    flat = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    loss: torch.Tensor = LabelSmoothingCrossEntropy(smoothing=ALPHA)(flat, targets.reshape(-1))
    return loss


Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]

CE_PROVIDERS: dict[str, Loss] = {
    "labelsmooth": lambda x: labelsmooth.cross_entropy(x["logits"], x["targets"], alpha=ALPHA),
    "labelsmooth_alpha0": lambda x: labelsmooth.cross_entropy(x["logits"], x["targets"], alpha=0.0),
    "labelsmooth_inplace": lambda x: labelsmooth.cross_entropy(
        x["logits"], x["targets"], alpha=ALPHA, inplace_backward=True
    ),
    "torch_label_smoothing": lambda x: F.cross_entropy(x["logits"], x["targets"], label_smoothing=ALPHA),
    "torch_plain": lambda x: F.cross_entropy(x["logits"], x["targets"]),
    "dense_targets": lambda x: _dense_targets(x["logits"], x["targets"]),
    "timm": lambda x: _timm(x["logits"], x["targets"]),
}

LINEAR_PROVIDERS: dict[str, Loss] = {
    "labelsmooth_linear": lambda x: labelsmooth.linear_cross_entropy(
        x["hidden"], x["weight"], x["targets"], alpha=ALPHA
    ),
    "torch_linear_then_ce": lambda x: F.cross_entropy(
        F.linear(x["hidden"], x["weight"]), x["targets"], label_smoothing=ALPHA
    ),
    "labelsmooth_unfused": lambda x: labelsmooth.cross_entropy(
        F.linear(x["hidden"], x["weight"]), x["targets"], alpha=ALPHA
    ),
    # A compute floor: the three matrix products with no loss at all.
    "projection_only": lambda x: F.linear(x["hidden"], x["weight"]).sum(),
}


def providers_for(case: Case) -> dict[str, Loss]:
    table = LINEAR_PROVIDERS if case.kind == "linear" else CE_PROVIDERS
    names = case.providers or tuple(table)
    return {name: table[name] for name in names}


def reset(inputs: dict[str, torch.Tensor], pristine: dict[str, torch.Tensor] | None) -> None:
    """Drop gradients; restore logits an in-place backward overwrote (untimed)."""
    for tensor in inputs.values():
        tensor.grad = None
    if pristine is not None:
        with torch.no_grad():
            inputs["logits"].copy_(pristine["logits"])


def step(loss_fn: Loss, inputs: dict[str, torch.Tensor]) -> None:
    loss_fn(inputs).backward()


def cases(quick: bool = False) -> list[Case]:
    """The issue's cases; ``quick`` shrinks them for a smoke run."""
    lm = [(4096, 32000), (2048, 128256)]
    if quick:
        return [
            Case("ce-512x1000-float32", "ce", (512, 1000), "float32", 3),
            Case("seg-2x150x32x32-float32", "seg", (2, 150, 32, 32), "float32", 3),
            Case("linear-256x64x4000-float32", "linear", (256, 64, 4000), "float32", 3),
        ]
    out: list[Case] = []
    for dtype in ("float32", "bfloat16"):
        out.append(Case(f"ce-8192x1000-{dtype}", "ce", (8192, 1000), dtype, 7))
        for rows, vocab in lm:
            out.append(Case(f"ce-{rows}x{vocab}-{dtype}", "ce", (rows, vocab), dtype,
                            5 if vocab < 100_000 else 3))
        out.append(Case(f"seg-8x150x128x128-{dtype}", "seg", (8, 150, 128, 128), dtype, 5))
    out.append(Case("linear-4096x1024x32000-float32", "linear", (4096, 1024, 32000), "float32", 3))
    out.append(Case("linear-2048x1024x128256-float32", "linear", (2048, 1024, 128256), "float32", 3,
                    ("labelsmooth_linear", "torch_linear_then_ce")))
    out.append(Case("linear-4096x1024x32000-bfloat16", "linear", (4096, 1024, 32000), "bfloat16", 3,
                    ("labelsmooth_linear", "torch_linear_then_ce")))
    return out

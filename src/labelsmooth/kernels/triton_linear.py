"""The fused output layer in Triton: smoothed cross-entropy over ``h @ W.T + b`` without logits.

Cut Cross-Entropy's design (Wijmans et al., 2024) with the label-smoothing
term added. No ``(N, V)`` tensor, nor a chunk of one, is written to memory:

* forward, a grid over (row blocks, vocabulary splits): each program builds
  tiles of logits ``z = h W^T + b`` with ``tl.dot`` (float32 accumulation),
  caps them (``k tanh(z / k)``), and keeps per row an online max and sum of
  ``exp``, the class sum ``sum_c cm_c z_c`` (the plain sum for the uniform
  ``1 / V``) and the target logit. The splits' partials are merged in torch
  (``O(splits N)``), then :func:`~labelsmooth.kernels.rowmath.row_losses`
  gives each row's loss from them;
* backward, a grid over (row blocks, vocabulary blocks): each program
  rebuilds its tile of logits, forms the gradient
  ``dz = (scale_p softmax(z) - scale_u cm + scale_y onehot(y)) dz/dx``
  (:mod:`labelsmooth.kernels.rowmath`'s row scales, the z-loss inside
  ``scale_p``) and adds ``dz W`` into ``dh``, ``dz^T h`` into ``dW`` and the
  column sums into ``db``, with float32 atomic adds. Without softcap the
  smoothing term ``-scale_u cm^T`` is rank one: its share of the three
  gradients is computed once in torch (``O((N + V) H)``), the tiles add only
  ``scale_p softmax + scale_y onehot``, and a tile is skipped (CCE's gradient
  filtering) when no target of its rows lies in it and its softmax entries
  are below ``SKIP_MASS[dtype] / V``, which drops less than ``SKIP_MASS``
  (the dtype's unit roundoff) of each row's softmax mass. Under softcap,
  ``1 - tanh^2`` makes that term full rank: every tile is computed, as is.

Mode: this module's kernels are decorated when it is imported, under
``TRITON_INTERPRET`` as it is then. Interpreted (``TRITON_INTERPRET=1``) they
run on CPU tensors in Triton's interpreter, which computes ``tl.dot`` wrongly
on bfloat16 operands: there they are upcast to float32 first (``UPCAST``);
compiled, they run on CUDA tensors with the native 16-bit dot.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from labelsmooth._dtypes import compute_dtype
from labelsmooth.kernels.linear_rows import LinearRows, backward_scales
from labelsmooth.kernels.rowmath import forward_arguments, forward_outputs, input_gradients, row_losses

__all__ = ["INTERPRETED", "TritonLinearCrossEntropyFunction", "supports"]

#: Whether the kernels below were decorated for Triton's interpreter (CPU tensors).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

#: Input dtypes the kernels take (float32 accumulation for all).
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class _Tiles(NamedTuple):
    """Block sizes: rows, vocabulary columns, hidden features per ``tl.dot`` step; warps
    per program; row blocks per group of the backward's launch order (:func:`_tile_of`)."""

    rows: int
    cols: int
    depth: int
    warps: int
    group: int


# Small tiles under the interpreter: the tests' few dozen rows and odd
# vocabularies then span several tiles and splits (and the tests' three row
# blocks a full and a partial group). On a GPU, sizes in the range CCE and
# Liger-Kernel use for H100-class parts (not tuned here: no GPU was lent).
_TILES = _Tiles(16, 32, 16, 1, 2) if INTERPRETED else _Tiles(64, 128, 64, 8, 16)
# float32 operands take twice the bytes: at a depth of 64 the backward's pipelined
# tl.dot buffers need 240 KiB of shared memory on sm_90 (benchmarks/triton_compile_check.py),
# over the 227 KiB a block may use on an H100/H200, so Triton would refuse to launch it.
# A depth of 32 needs 152 KiB (forward 72 KiB).
_TILES_FLOAT32 = _TILES if INTERPRETED else _TILES._replace(depth=32)


def tiles_for(dtype: torch.dtype) -> _Tiles:
    """The block sizes the kernels run with for inputs of ``dtype``."""
    return _TILES_FLOAT32 if dtype == torch.float32 else _TILES


# Tile skipping (Cut Cross-Entropy's "gradient filtering"), without softcap. The
# backward skips a tile (no tl.dot, no atomics) when no row of its block has its
# target among its columns and every softmax entry p_nc of its rows (those with
# scale_p != 0) is below tau = SKIP_MASS[dtype] / V. The smoothing term is added
# exactly outside the tiles, so a skip drops scale_p_n p_nc and nothing else, and
# a row drops less than V tau = SKIP_MASS of softmax mass: its part of dh is off by
# at most |scale_p_n| SKIP_MASS max_c ||W_c||, and the parts of dW and db, summed
# over classes, by at most SKIP_MASS sum_n |scale_p_n| (||h_n||, 1). SKIP_MASS is
# the dtype's unit roundoff (half its eps): an error of the order of rounding the
# row's gradient once to the input dtype. In float32, tau = 2^-24 / V skips only rows'
# far tails (p < 4.6e-13, z - lse < -28.4 at V = 128256).
#
# CCE's default (filter_eps="auto") filters per entry at the dtype's eps / 32
# (2^-12 for bfloat16). That bounds no row's sum, and it would break label
# smoothing: at the smoothed loss's minimum every non-target class has
# p_c = alpha / V (uniform), 7.8e-7 = 2^-20.3 at alpha = 0.1, V = 128256, far
# below 2^-12. Such tiles would all be skipped while the exact smoothing term
# still pushed their logits up: a converged model's gradient would not vanish.
# Here (2^-8 / V for bfloat16) the skipped entries lie below 1 / (256 alpha) of
# that equilibrium, and a bfloat16 tile is skipped when all its entries have
# z - lse < log(2^-8 / V) (-17.3 at V = 128256).
# A module constant, not an option of linear_cross_entropy: the bound above is
# the contract. SKIP_MASS[dtype] = 0 turns skipping off (every entry is >= 0).
#: Softmax mass a row may lose to skipped backward tiles, by input dtype.
SKIP_MASS = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}

#: Elements of one float32 block of :func:`_weighted_sum` (64 MiB).
_SUM_ELEMENTS = 1 << 24


def supports(hidden: Tensor) -> bool:
    """Whether these kernels can run on ``hidden``: its dtype, and its device for this mode."""
    device_type = "cpu" if INTERPRETED else "cuda"
    return hidden.dtype in DTYPES and hidden.device.type == device_type


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): finite at both ends (exp overflows to inf -> 1).
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w,
                HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    """``h[rows] @ W[cols].T + b[cols]`` as a float32 ``(BLOCK_M, BLOCK_V)`` tile."""
    acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
    for start in range(0, hidden_size, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < hidden_size
        h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w = tl.load(w_ptr + cols[None, :] * stride_w + ks[:, None], mask=col_ok[None, :] & k_ok[:, None],
                    other=0.0)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _forward_kernel(h_ptr, w_ptr, b_ptr, y_ptr, cm_ptr, max_ptr, sum_ptr, class_ptr, zy_ptr,
                    num_rows, vocab, hidden_size, stride_h, stride_w, cols_per_split, softcap,
                    HAS_BIAS: tl.constexpr, HAS_CM: tl.constexpr, HAS_CAP: tl.constexpr,
                    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per row and split: max of ``z``, ``sum exp(z - max)``, ``sum_c cm_c z_c`` and ``z_y``."""
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_rows
    target = tl.load(y_ptr + rows, mask=row_ok, other=-1)
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    exp_sum = tl.zeros((BLOCK_M,), tl.float32)
    class_sum = tl.zeros((BLOCK_M,), tl.float32)
    z_y = tl.zeros((BLOCK_M,), tl.float32)
    first = split * cols_per_split
    for start in range(first, tl.minimum(first + cols_per_split, vocab), BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = cols < vocab
        z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w,
                        HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_V, BLOCK_K)
        if HAS_CAP:
            z = softcap * _tanh(z / softcap)
        z_y += tl.sum(tl.where(cols[None, :] == target[:, None], z, 0.0), axis=1)
        if HAS_CM:
            mass = tl.load(cm_ptr + cols, mask=col_ok, other=0.0)
            class_sum += tl.sum(z * mass[None, :], axis=1)
        else:
            class_sum += tl.sum(tl.where(col_ok[None, :], z, 0.0), axis=1)
        z = tl.where(col_ok[None, :], z, float("-inf"))
        # Online logsumexp: every tile has a valid column, so new_max is finite.
        new_max = tl.maximum(row_max, tl.max(z, axis=1))
        exp_sum = exp_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(z - new_max[:, None]), axis=1)
        row_max = new_max
    out = split * num_rows + rows
    tl.store(max_ptr + out, row_max, mask=row_ok)
    tl.store(sum_ptr + out, exp_sum, mask=row_ok)
    tl.store(class_ptr + out, class_sum, mask=row_ok)
    tl.store(zy_ptr + out, z_y, mask=row_ok)


@triton.jit
def _tile_of(num_rows, vocab, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, GROUP_M: tl.constexpr):
    """``(row block, vocabulary block)`` of this program of a 1-D grid, in groups of
    ``GROUP_M`` row blocks: a group runs all its tiles of one vocabulary block, then the next.

    Why (reasoned, not measured: no GPU was lent). Row block first (a 2-D
    grid's order), the ~260 programs resident at once on an H100/H200 (132 SMs)
    at ``N = 8192`` (128 row blocks of 64) span one or two vocabulary blocks:
    ~128 of them add into the same ``dW`` tile at once, and together they
    stream all of ``h`` and ``dh`` (64 + 128 MiB at ``H = 4096``: bfloat16, float32)
    once per vocabulary block. In groups of 16 row blocks, ~16 programs add into
    each ``dW`` tile and ~16 into each ``dh`` block, and the resident working
    set of ``h, dh, W, dW`` drops from ~200 to ~75 MiB: fewer same-address
    atomics and more L2 hits (the grouped order of Triton's matmul tutorial)."""
    pid = tl.program_id(0)
    col_blocks = tl.cdiv(vocab, BLOCK_V)
    first = pid // (GROUP_M * col_blocks) * GROUP_M
    size = tl.minimum(tl.cdiv(num_rows, BLOCK_M) - first, GROUP_M)
    within = pid % (GROUP_M * col_blocks)
    return first + within % size, within // size


@triton.jit
def _backward_kernel(h_ptr, w_ptr, b_ptr, y_ptr, cm_ptr, lse_ptr, sp_ptr, su_ptr, sy_ptr,
                     dh_ptr, dw_ptr, db_ptr, num_rows, vocab, hidden_size, stride_h, stride_w, softcap,
                     threshold, HAS_BIAS: tl.constexpr, HAS_CM: tl.constexpr, HAS_CAP: tl.constexpr,
                     NEED_H: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """One tile's ``dz``, added into ``dh`` (``dz W``), ``dW`` (``dz^T h``) and ``db``.

    Without a cap the smoothing term is left out (the caller adds its rank-one
    part) and the tile is skipped when nothing in it is live: no row's target
    (with ``scale_y != 0``) among its columns, and ``softmax < threshold`` in
    every row with ``scale_p != 0``."""
    row_block, col_block = _tile_of(num_rows, vocab, BLOCK_M, BLOCK_V, GROUP_M)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = col_block * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, col_ok = rows < num_rows, cols < vocab
    inside = row_ok[:, None] & col_ok[None, :]
    z = _logit_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_ok, col_ok, hidden_size, stride_h, stride_w,
                    HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_V, BLOCK_K)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    scale_p = tl.load(sp_ptr + rows, mask=row_ok, other=0.0)[:, None]
    scale_y = tl.load(sy_ptr + rows, mask=row_ok, other=0.0)[:, None]
    on_target = cols[None, :] == tl.load(y_ptr + rows, mask=row_ok, other=-1)[:, None]
    if HAS_CAP:
        tanh = _tanh(z / softcap)
        scale_u = tl.load(su_ptr + rows, mask=row_ok, other=0.0)[:, None]
        if HAS_CM:
            scale_u = scale_u * tl.load(cm_ptr + cols, mask=col_ok, other=0.0)[None, :]
        dz = scale_p * tl.exp(softcap * tanh - lse[:, None]) - scale_u
        dz = tl.where(on_target, dz + scale_y, dz) * (1.0 - tanh * tanh)
    else:
        softmax = tl.exp(z - lse[:, None])
        live = (on_target & (scale_y != 0.0)) | ((softmax >= threshold) & (scale_p != 0.0))
        if tl.max(tl.max(tl.where(inside & live, 1, 0), axis=1), axis=0) == 0:
            return
        dz = scale_p * softmax + tl.where(on_target, scale_y, 0.0)
    dz = tl.where(inside, dz, 0.0)
    if NEED_B:
        tl.atomic_add(db_ptr + cols, tl.sum(dz, axis=0), mask=col_ok)
    if NEED_H or NEED_W:
        _add_products(h_ptr, w_ptr, dh_ptr, dw_ptr, dz, rows, cols, row_ok, col_ok, hidden_size,
                      stride_h, stride_w, NEED_H, NEED_W, UPCAST, PRECISION, BLOCK_K)


@triton.jit
def _add_products(h_ptr, w_ptr, dh_ptr, dw_ptr, dz, rows, cols, row_ok, col_ok, hidden_size,
                  stride_h, stride_w, NEED_H: tl.constexpr, NEED_W: tl.constexpr,
                  UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """``dh[rows] += dz W[cols]`` and ``dW[cols] += dz^T h[rows]``, one ``BLOCK_K`` slice at a time
    (the float32 gradients are contiguous ``(N, H)`` and ``(V, H)``)."""
    for start in range(0, hidden_size, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_ok = ks < hidden_size
        if NEED_H:
            w = tl.load(w_ptr + cols[:, None] * stride_w + ks[None, :], mask=col_ok[:, None] & k_ok[None, :],
                        other=0.0)
            if UPCAST:
                w = w.to(tl.float32)
            part = tl.dot(dz.to(w.dtype), w, input_precision=PRECISION)
            tl.atomic_add(dh_ptr + rows[:, None] * hidden_size + ks[None, :], part,
                          mask=row_ok[:, None] & k_ok[None, :])
        if NEED_W:
            h = tl.load(h_ptr + rows[:, None] * stride_h + ks[None, :], mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0)
            if UPCAST:
                h = h.to(tl.float32)
            part = tl.dot(tl.trans(dz.to(h.dtype)), h, input_precision=PRECISION)
            tl.atomic_add(dw_ptr + cols[:, None] * hidden_size + ks[None, :], part,
                          mask=col_ok[:, None] & k_ok[None, :])


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s float32 mode: PyTorch's own choice for float32 matmuls (full
    precision unless ``torch.backends.cuda.matmul.allow_tf32``); 16-bit operands ignore it."""
    allow_tf32 = not INTERPRETED and torch.backends.cuda.matmul.allow_tf32
    return "tf32" if dtype == torch.float32 and allow_tf32 else "ieee"


def _splits(row_blocks: int, col_tiles: int, device: torch.device) -> int:
    """Vocabulary splits of the forward grid: about four programs per SM on a GPU (two
    splits in the interpreter, so that the merge is exercised), never an empty split."""
    if INTERPRETED:
        wanted = 2
    else:
        wanted = triton.cdiv(4 * torch.cuda.get_device_properties(device).multi_processor_count, row_blocks)
    return max(1, min(col_tiles, wanted))


def _forward_statistics(hidden: Tensor, weight: Tensor, bias: Tensor | None, index: Tensor,
                        cm: Tensor | None, softcap: float | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row, float32 ``(N, 1)`` each: ``(max z, sum exp(z - max), sum_c cm_c z_c, z_y)``."""
    rows, hidden_size = hidden.shape
    vocab, tiles = weight.shape[0], tiles_for(hidden.dtype)
    row_blocks, col_tiles = triton.cdiv(rows, tiles.rows), triton.cdiv(vocab, tiles.cols)
    cols_per_split = triton.cdiv(col_tiles, _splits(row_blocks, col_tiles, hidden.device)) * tiles.cols
    splits = triton.cdiv(vocab, cols_per_split)
    partial = torch.empty(4, splits, rows, dtype=torch.float32, device=hidden.device)
    _forward_kernel[(row_blocks, splits)](
        hidden, weight, partial if bias is None else bias, index, partial if cm is None else cm,
        partial[0], partial[1], partial[2], partial[3], rows, vocab, hidden_size, hidden.stride(0),
        weight.stride(0), cols_per_split, 1.0 if softcap is None else float(softcap),
        HAS_BIAS=bias is not None, HAS_CM=cm is not None, HAS_CAP=softcap is not None,
        UPCAST=INTERPRETED and hidden.dtype == torch.bfloat16, PRECISION=_precision(hidden.dtype),
        BLOCK_M=tiles.rows, BLOCK_V=tiles.cols, BLOCK_K=tiles.depth, num_warps=tiles.warps,
    )
    # The splits' partials merged: one max, the sums of exp rescaled to it.
    split_max, split_sum, class_sum, z_y = partial
    row_max = split_max.amax(0)
    exp_sum = (split_sum * torch.exp(split_max - row_max)).sum(0)
    return row_max[:, None], exp_sum[:, None], class_sum.sum(0)[:, None], z_y.sum(0)[:, None]


def _weighted_sum(matrix: Tensor, coefficients: Tensor) -> Tensor:
    """``coefficients @ matrix``, ``(R,) x (R, H) -> (H,)`` in float32, converting a 16-bit
    ``matrix`` one block of rows at a time (a float32 copy of all of it would be twice its memory)."""
    total = coefficients.new_zeros(matrix.shape[1])
    step = max(1, _SUM_ELEMENTS // max(1, matrix.shape[1]))
    for start in range(0, matrix.shape[0], step):
        total += coefficients[start : start + step] @ matrix[start : start + step].to(torch.float32)
    return total


def _smoothing_gradients(hidden: Tensor, weight: Tensor, cm: Tensor | None, scale_u: Tensor,
                         needs: tuple[bool, bool, bool]) -> list[Tensor | None]:
    """The smoothing term's share of ``(dh, dW, db)``, float32, in closed form.

    Without a cap that term of ``dz`` is ``-scale_u cm^T`` ``(N, V)``, rank one
    (``cm = 1`` for the uniform ``1 / V``, folded into ``scale_u``), so summed
    over all tiles it gives ``dh = -scale_u (cm^T W)`` ``(N, H)``,
    ``dW = -cm (scale_u^T h)`` ``(V, H)`` and ``db = -cm sum(scale_u)`` ``(V,)``:
    ``O((N + V) H)`` work, and the tiles never need it."""
    mass = torch.ones(weight.shape[0], dtype=torch.float32, device=weight.device) if cm is None else cm
    grad_h = -scale_u[:, None] * _weighted_sum(weight, mass)[None, :] if needs[0] else None
    grad_w = -mass[:, None] * _weighted_sum(hidden, scale_u)[None, :] if needs[1] else None
    grad_b = -mass * scale_u.sum() if needs[2] else None
    return [grad_h, grad_w, grad_b]


def _gradients(hidden: Tensor, weight: Tensor, bias: Tensor | None, index: Tensor, cm: Tensor | None,
               lse: Tensor, scales: tuple[Tensor, Tensor, Tensor], softcap: float | None,
               needs: tuple[bool, ...]) -> list[Tensor | None]:
    """``(dh, dW, db)`` for the row scales ``(scale_p, scale_u, scale_y)``, in the inputs' dtypes
    (``None`` where not needed), summed over tiles in float32; without a cap, the smoothing
    term in closed form (:func:`_smoothing_gradients`) and only the live tiles in the kernel."""
    rows, hidden_size = hidden.shape
    vocab, tiles = weight.shape[0], tiles_for(hidden.dtype)
    need = (needs[0], needs[1], bias is not None and needs[2])
    scale_p, scale_u, scale_y = (s.reshape(-1).to(torch.float32).contiguous() for s in scales)
    if softcap is None:
        grad_h, grad_w, grad_b = _smoothing_gradients(hidden, weight, cm, scale_u, need)
    else:  # 1 - tanh^2 makes the smoothing term full rank: every tile computes it
        shapes = ((rows, hidden_size), (vocab, hidden_size), (vocab,))
        grad_h, grad_w, grad_b = (torch.zeros(shape, dtype=torch.float32, device=hidden.device) if wanted
                                  else None for shape, wanted in zip(shapes, need, strict=True))
    unused = lse  # a pointer for the arguments a constexpr switches off
    _backward_kernel[(triton.cdiv(rows, tiles.rows) * triton.cdiv(vocab, tiles.cols),)](
        hidden, weight, unused if bias is None else bias, index, unused if cm is None else cm, lse,
        scale_p, scale_u, scale_y, unused if grad_h is None else grad_h,
        unused if grad_w is None else grad_w, unused if grad_b is None else grad_b, rows, vocab,
        hidden_size, hidden.stride(0), weight.stride(0), 1.0 if softcap is None else float(softcap),
        SKIP_MASS[hidden.dtype] / vocab, HAS_BIAS=bias is not None, HAS_CM=cm is not None,
        HAS_CAP=softcap is not None, NEED_H=need[0], NEED_W=need[1], NEED_B=need[2],
        UPCAST=INTERPRETED and hidden.dtype == torch.bfloat16, PRECISION=_precision(hidden.dtype),
        BLOCK_M=tiles.rows, BLOCK_V=tiles.cols, BLOCK_K=tiles.depth, GROUP_M=tiles.group,
        num_warps=tiles.warps,
    )
    dtypes = (hidden.dtype, weight.dtype, weight.dtype if bias is None else bias.dtype)
    grads = (grad_h, grad_w, grad_b)
    return [None if g is None else g.to(dtype) for g, dtype in zip(grads, dtypes, strict=True)]


class TritonLinearCrossEntropyFunction(torch.autograd.Function):
    """Autograd function of the Triton path of :func:`labelsmooth.linear_cross_entropy`: the
    arguments of :func:`labelsmooth.kernels.fused_linear_cross_entropy` but ``chunk_size``;
    per-row loss or scalar, with a z-loss ``(loss, z-loss part)``, both differentiable."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
        smoothing: float, prior: Tensor | None, class_weight: Tensor | None, ignore_index: int,
        divisor: Tensor | float | None, z_loss: float, z_divisor: Tensor | float | None,
        softcap: float | None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        hidden, weight = hidden.contiguous(), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        state = LinearRows(targets, weight.shape[0], smoothing=smoothing, prior=prior, weight=class_weight,
                           ignore_index=ignore_index, z_loss=z_loss, softcap=softcap,
                           dtype=compute_dtype(hidden.dtype), device=hidden.device)
        terms = state.terms
        index = terms.target_index.reshape(-1).contiguous()
        cm = None if terms.cm is None else terms.cm.to(torch.float32).contiguous()
        stats = _forward_statistics(hidden, weight, bias, index, cm, softcap)
        loss, lse, _, _ = row_losses(state.layout, *stats, terms.tw, terms.smooth_mass, terms.mass_sum,
                                     terms.cm is None)
        ctx.state, ctx.index, ctx.cm = state, index, cm
        ctx.divisor, ctx.z_divisor = divisor, divisor if z_divisor is None else z_divisor
        ctx.save_for_backward(hidden, weight, bias, lse)
        return forward_outputs(ctx, loss, lse, terms.z_mask, z_loss, divisor, ctx.z_divisor)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_loss: Tensor | None, grad_z: Tensor | None = None
    ) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, lse = ctx.saved_tensors
        scales = backward_scales(ctx.state, grad_loss, grad_z, lse, ctx.divisor, ctx.z_divisor)
        grad_hidden, grad_weight, grad_bias = _gradients(
            hidden, weight, bias, ctx.index, ctx.cm, lse.to(torch.float32).contiguous(), scales,
            ctx.state.softcap, ctx.needs_input_grad[:3],
        )
        return input_gradients(_INPUTS, hidden=grad_hidden, weight=grad_weight, bias=grad_bias)


#: The forward's argument names, for the backward's :func:`~labelsmooth.kernels.rowmath.input_gradients`.
_INPUTS = forward_arguments(TritonLinearCrossEntropyFunction)

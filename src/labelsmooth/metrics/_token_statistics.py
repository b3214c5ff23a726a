"""Per-token statistics of a language model's predictions: what calibration metrics need, without the logits.

A language model's full logits cannot be kept (50,000 test tokens times a
128k vocabulary is 25 GB in float32), but accuracy, NLL, top-label ECE,
smooth ECE, adaptive ECE, Brier and AURC need only a few numbers per token,
and temperature scaling only those numbers at a few temperatures. Only torch
is used, so this module is part of the core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from labelsmooth import _validation as v

__all__ = ["TEMPERATURES", "TokenStatistics", "token_statistics"]

#: The temperature grid: ``2^(k/6)`` for ``k = -6 .. 12``, 0.5 to 4 in steps of 12% (``T = 1`` is
#: the 7th). A fit between two nodes is at most 6% from a node, where the NLL of a fit is flat.
TEMPERATURES: tuple[float, ...] = tuple(2.0 ** (k / 6) for k in range(-6, 13))
#: Entries of one float64 chunk of rows (about 32 MB).
_CHUNK = 2**22


@dataclass(frozen=True)
class TokenStatistics:
    """One row per token that is not ignored, in the row-major order of ``labels``.

    ``index`` ``(M,)`` int64: the token's flat position in ``labels``;
    ``labels`` ``(M,)`` int64; ``correct`` ``(M,)`` bool: the argmax is the
    label (the same at every temperature); ``temperatures`` ``(G,)`` float64;
    ``nll``, ``confidence`` (the top-label probability) and ``brier``
    ``(M, G)`` float32, one column per temperature; ``num_classes``: the
    vocabulary size ``V``.
    """

    index: Tensor
    labels: Tensor
    correct: Tensor
    temperatures: Tensor
    nll: Tensor
    confidence: Tensor
    brier: Tensor
    num_classes: int


def _chunk_statistics(z: Tensor, y: Tensor, temperatures: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``nll``, ``confidence``, ``brier`` ``(n, G)`` in float64 of logits ``z`` ``(n, V)``."""
    # Shifted by the row maximum: z <= 0 with a 0 in every row, so every logsumexp below is >= 0.
    z = z.double()
    z = z - z.amax(dim=1, keepdim=True)
    z_y = z.gather(1, y[:, None])[:, 0]
    columns: list[list[Tensor]] = [[], [], []]
    for t in temperatures.tolist():
        lse = torch.logsumexp(z / t, dim=1)
        nll = lse - z_y / t
        # sum_c p_c^2 = exp(logsumexp(2 z / T) - 2 logsumexp(z / T)); Brier = sum_c p_c^2 - 2 p_y + 1.
        squares = torch.exp(torch.logsumexp(z * (2 / t), dim=1) - 2 * lse)
        values = (nll, torch.exp(-lse), squares - 2 * torch.exp(-nll) + 1)
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    nll, confidence, brier = (torch.stack(column, dim=1) for column in columns)
    return nll, confidence, brier


def token_statistics(logits: Tensor, labels: Tensor, *, ignore_index: int = v.IGNORE_INDEX, dim: int = -1,
                     temperatures: object = TEMPERATURES) -> TokenStatistics:
    """What accuracy, NLL, ECE, smooth ECE, adaptive ECE, Brier and AURC need, per token and temperature.

    For the logits ``z`` of a token with label ``y`` and a temperature ``T``,
    with ``p = softmax(z / T)``:

    .. math::
        \\mathrm{nll}_T = -\\log p_y, \\quad \\mathrm{confidence}_T = \\max_c p_c, \\quad
        \\mathrm{brier}_T = \\sum_c p_c^2 - 2 p_y + 1, \\quad \\mathrm{correct} = [\\arg\\max_c z_c = y]

    computed in float64 (chunks of rows, so memory stays near the input's
    size) and kept in float32: ``1 + 12 G`` bytes per token, 229 with the
    default grid of :data:`TEMPERATURES`. For a causal LM shift first:
    ``token_statistics(logits[:, :-1], labels[:, 1:])``.

    Args:
        logits: ``(..., V, ...)`` floating-point logits, the vocabulary at ``dim``.
        labels: the logits' shape without ``dim``, integers in ``[0, V)`` or ``ignore_index``.
        ignore_index: label of the tokens left out (``-100``, Hugging Face's).
        dim: the vocabulary dimension of ``logits``.
        temperatures: ``(G,)`` increasing positive temperatures that include 1.0.

    Returns:
        A :class:`TokenStatistics` on the CPU; nothing is written to the inputs.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
        >>> stats = token_statistics(logits, torch.tensor([[0, -100]]), temperatures=[1.0])
        >>> stats.index.tolist(), stats.correct.tolist(), round(float(stats.nll[0, 0]), 4)
        ([0], [True], 0.1269)
    """
    logits, dim = v.check_logits(logits, dim)
    grid = v.check_temperatures(temperatures)
    labels = v.check_tensor(labels, "labels")
    expected = (*logits.shape[:dim], *logits.shape[dim + 1:])
    if tuple(labels.shape) != expected:
        raise v.fail("labels", f"shape {expected} (the logits' without dim)", tuple(labels.shape))
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise v.fail("labels", "an integer tensor of token ids", labels.dtype, error=TypeError)
    rows = logits.detach().movedim(dim, -1).reshape(-1, logits.shape[dim])
    flat = labels.detach().reshape(-1).to(rows.device)
    v.check_index_values(flat, rows.shape[1], ignore_index, arg="labels")
    index = torch.nonzero(flat != ignore_index).flatten()
    step = max(1, _CHUNK // rows.shape[1])
    parts = []
    for start in range(0, index.numel(), step):
        chosen = index[start:start + step]
        z, y = rows[chosen], flat[chosen].long()
        finite = torch.isfinite(z).all(dim=1)
        if not bool(finite.all()):
            raise v.fail("logits", "finite values", f"a non-finite value at token {int(chosen[~finite][0])}")
        parts.append((z.argmax(dim=1) == y, *_chunk_statistics(z, y, grid.to(z.device))))
    if not parts:
        none = torch.zeros(0, grid.numel())
        return TokenStatistics(index.cpu(), index.cpu(), torch.zeros(0, dtype=torch.bool), grid, none, none,
                               none, int(rows.shape[1]))
    correct, nll, confidence, brier = (torch.cat(column).cpu() for column in zip(*parts, strict=True))
    return TokenStatistics(index.cpu(), flat[index].long().cpu(), correct, grid, nll.float(),
                           confidence.float(), brier.float(), int(rows.shape[1]))

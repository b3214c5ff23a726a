"""Token-level run records: a language model's per-token statistics in place of its logits.

The keys (the README's "Run records" section is the specification), per
split ``test`` (required) and ``val`` (optional), ``M`` tokens each, written
by :func:`labelsmooth.metrics.token_statistics` through
``labelsmooth.integrations.transformers.save_run``:

* ``{split}_tokens_ids``: int ``(M,)``, the sequence (example) each token
  belongs to, in ``[0, 2^31)``; ``{split}_tokens_positions``: int ``(M,)``,
  the token's position in it, in ``[0, 2^32)``; the pair is the row's id;
* ``{split}_tokens_labels``: int ``(M,)``; ``{split}_tokens_correct``: bool
  ``(M,)`` (argmax equals label);
* ``{split}_tokens_nll``, ``{split}_tokens_confidence``,
  ``{split}_tokens_brier``: float ``(M, G)``, one column per temperature;
* ``tokens_temperatures``: float ``(G,)``, increasing, holding 1.0;
  ``tokens_num_classes``: int ``()``, the vocabulary size.

Every metric of such a record is per token. Those that need every class's
probability (classwise ECE) are absent; temperature scaling picks the node of
the grid with the lowest validation NLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labelsmooth import _validation as v
from labelsmooth.metrics import ReliabilityBins, TokenStatistics, reliability_bins
from labelsmooth.metrics._binned import adaptive_ece_of
from labelsmooth.metrics._selective import aurc_of
from labelsmooth.metrics._smooth import smooth_ece_of

__all__ = [
    "ABSENT", "ARRAYS", "KEYS", "TASK", "TokenSplit", "from_statistics", "grid_fit", "token_note",
    "token_scores", "token_split",
    "token_values",
]

#: ``CompareResult.task`` of a comparison of token-level records.
TASK = "tokens"
ARRAYS = ("ids", "positions", "labels", "correct", "nll", "confidence", "brier")
SHARED = ("tokens_temperatures", "tokens_num_classes")
KEYS = (*(f"{split}_tokens_{name}" for split in ("test", "val") for name in ARRAYS), *SHARED)
_PER_TEMPERATURE = ("nll", "confidence", "brier")
#: The metrics a token-level record cannot give (``metrics.json``'s ``absent_metrics``).
ABSENT = ("classwise_ece",)


@dataclass(frozen=True)
class TokenSplit:
    """One split's tokens; ``ids`` ``(M,)`` int64 is ``sequence * 2^32 + position``, each token's row id."""

    ids: np.ndarray
    examples: np.ndarray
    labels: np.ndarray
    correct: np.ndarray
    nll: np.ndarray
    confidence: np.ndarray
    brier: np.ndarray
    temperatures: np.ndarray
    num_classes: int

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The split's keys in a record file, and the record's shared ones."""
        return {f"{prefix}_tokens_ids": self.examples, f"{prefix}_tokens_positions": self.ids % 2**32,
                f"{prefix}_tokens_labels": self.labels, f"{prefix}_tokens_correct": self.correct,
                **{f"{prefix}_tokens_{name}": getattr(self, name) for name in _PER_TEMPERATURE},
                "tokens_temperatures": self.temperatures, "tokens_num_classes": np.array(self.num_classes)}

    def reordered(self, order: np.ndarray) -> TokenSplit:
        return TokenSplit(self.ids[order], self.examples[order], self.labels[order], self.correct[order],
                          self.nll[order], self.confidence[order], self.brier[order], self.temperatures,
                          self.num_classes)


def _array(arrays: dict[str, Any], key: str, where: str, kind: str,
           shape: tuple[int | None, ...]) -> np.ndarray:
    """``arrays[key]`` as numpy, of dtype ``kind`` and ``shape`` (``None``: any length there)."""
    value = arrays.get(key)
    if value is None:
        raise v.fail(f"{where}: {key}", "an array (every token key of a split is required)", None)
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind not in kind:
        raise v.fail(f"{where}: {key}", f"an array of kind {kind!r}", str(array.dtype), error=TypeError)
    if len(array.shape) != len(shape) or any(n not in (None, m) for n, m in zip(shape, array.shape,
                                                                                  strict=True)):
        raise v.fail(f"{where}: {key}", f"shape {shape}", tuple(array.shape))
    return array


def shared(arrays: dict[str, Any], where: str) -> tuple[np.ndarray, int]:
    """The record's temperature grid and vocabulary size."""
    grid = v.check_temperatures(_array(arrays, "tokens_temperatures", where, "f", (None,))).numpy()
    classes = int(_array(arrays, "tokens_num_classes", where, "iu", ()))
    if classes < 2:
        raise v.fail(f"{where}: tokens_num_classes", "a vocabulary of at least 2", classes)
    return grid, classes


def token_split(arrays: dict[str, Any], prefix: str, where: str) -> TokenSplit | None:
    """The ``prefix`` split of a token-level record (``None`` if it has none), checked."""
    if not any(f"{prefix}_tokens_{name}" in arrays for name in ARRAYS):
        return None
    return _build(arrays, prefix, where)


def _build(arrays: dict[str, Any], prefix: str, where: str) -> TokenSplit:
    grid, classes = shared(arrays, where)
    m = len(_array(arrays, f"{prefix}_tokens_labels", where, "iu", (None,)))
    got = {name: _array(arrays, f"{prefix}_tokens_{name}", where, "f" if name in _PER_TEMPERATURE else
                        "b" if name == "correct" else "iu",
                        (m, len(grid)) if name in _PER_TEMPERATURE else (m,)) for name in ARRAYS}
    ids, positions, labels = (got[name].astype(np.int64) for name in ("ids", "positions", "labels"))
    for name, array, high in (("ids", ids, 2**31), ("positions", positions, 2**32),
                              ("labels", labels, classes)):
        if m and (array.min() < 0 or array.max() >= high):
            raise v.fail(f"{where}: {prefix}_tokens_{name}", f"values in [0, {high})",
                         int(array[(array < 0) | (array >= high)][0]))
    values = {name: np.ascontiguousarray(got[name], dtype=np.float32) for name in _PER_TEMPERATURE}
    finite = np.isfinite(np.concatenate(list(values.values()), axis=1)).all(axis=1)
    if not finite.all():
        raise v.fail(f"{where}: {prefix}_tokens_nll", "finite statistics",
                     f"a non-finite value at token {int(np.argmin(finite))}")
    return TokenSplit(ids * 2**32 + positions, ids, labels, got["correct"].astype(bool), values["nll"],
                      values["confidence"], values["brier"], grid, classes)


def from_statistics(parts: list[tuple[TokenStatistics, np.ndarray, np.ndarray]]) -> TokenSplit:
    """A split from :func:`~labelsmooth.metrics.token_statistics` of batches, each with its tokens'
    sequence ids and positions ``(M,)``."""
    if not parts:
        raise v.fail("test_dataset", "at least one token that is not ignored", 0)
    stats = [part[0] for part in parts]
    examples, positions = (np.concatenate([part[k] for part in parts]).astype(np.int64) for k in (1, 2))
    arrays = {f"test_tokens_{name}": np.concatenate([getattr(s, name).numpy() for s in stats])
              for name in ("labels", "correct", *_PER_TEMPERATURE)}
    arrays |= {"test_tokens_ids": examples, "test_tokens_positions": positions,
               "tokens_temperatures": stats[0].temperatures.numpy(),
               "tokens_num_classes": np.array(stats[0].num_classes)}
    return _build(arrays, "test", "token statistics")


def token_note(test: TokenSplit) -> str:
    """What the report says of a token-level comparison: the unit, what is absent, the temperature grid."""
    grid = ", ".join(f"{t:.3g}" for t in test.temperatures)
    return (f"unit: tokens. Every metric is per token ({len(test.ids)} test tokens in "
            f"{len(np.unique(test.examples))} sequences, a vocabulary of {test.num_classes}), from the "
            "records' per-token statistics; the bootstrap over examples resamples sequences. Absent: "
            f"{', '.join(ABSENT)} (needs every class's probability, which token records do not keep). "
            f"Temperature scaling picks the validation-NLL minimizer on the grid T = {grid}.")


def grid_fit(val: TokenSplit) -> tuple[float, int, bool]:
    """The grid's temperature with the lowest mean validation NLL, its column, and whether it is an end."""
    column = int(np.argmin(val.nll.astype(np.float64).mean(axis=0)))
    return float(val.temperatures[column]), column, column in (0, len(val.temperatures) - 1)


Columns = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def token_values(split: TokenSplit, column: int) -> Columns:
    """``(confidence, correct, nll, brier)`` float64 ``(M,)`` at the grid's ``column``."""
    confidence, correct, nll, brier = (torch.from_numpy(array.astype(np.float64)) for array in (
        split.confidence[:, column], split.correct, split.nll[:, column], split.brier[:, column]))
    return confidence, correct, nll, brier


def token_scores(split: TokenSplit, column: int, n_bins: int) -> tuple[dict[str, float], ReliabilityBins]:
    """Every per-token metric at the grid's ``column`` and the reliability bins (Guo et al.'s binning)."""
    confidence, correct, nll, brier = token_values(split, column)
    # Two columns, the confidence and 0, with target 0 when right: the ECE and its bins see exactly
    # the top-label confidence and correctness (they do not require rows that sum to 1).
    pairs = torch.stack([confidence, torch.zeros_like(confidence)], dim=1)
    bins = reliability_bins(pairs, (correct == 0).long(), n_bins=n_bins)
    gap = (bins.accuracy - bins.confidence).abs()
    metrics = {
        "accuracy": float(correct.mean()), "nll": float(nll.mean()),
        "ece": float((gap * bins.count).sum() / bins.total),
        "smooth_ece": smooth_ece_of(confidence, correct),
        "adaptive_ece": adaptive_ece_of(confidence, correct, n_bins),
        "brier": float(brier.mean()), "aurc": aurc_of(confidence, correct),
    }
    return metrics, bins

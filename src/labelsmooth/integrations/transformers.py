"""Label-smoothed language-model losses for Hugging Face Transformers.

One object, :class:`CausalLMLoss`, serves both places where Transformers lets
a user change the loss:

* the Trainer: ``Trainer(..., compute_loss_func=CausalLMLoss(0.1))``, called
  as ``loss(outputs, labels, num_items_in_batch=...)``;
* the model: ``model.loss_function = CausalLMLoss(0.1)``, called by the model's
  ``forward`` as ``loss(logits, labels, vocab_size=..., num_items_in_batch=...,
  shift_labels=...)``, so ``model(input_ids, labels=labels).loss`` is smoothed
  (and a plain ``Trainer`` uses it).

It shifts for causal LMs (position ``t`` predicts label ``t + 1``), skips
``ignore_index=-100``, and divides the summed loss by ``num_items_in_batch``
when the Trainer passes it: the number of predicted tokens in the whole
gradient-accumulation step (across devices with
``average_tokens_across_devices``), which is what makes accumulated gradients
equal to those of one large batch (transformers issue 46731). Without it, the
mean is over this call's non-ignored tokens.

Compared with ``Trainer(label_smoothing_factor=alpha)`` (``LabelSmoother`` in
``transformers.trainer_pt_utils``): with ``convention="uniform"`` the two give
the same loss, ``(1 - alpha) * nll + alpha * mean_c(-log p_c)`` averaged over
the same tokens, and the same training, in the installed version (5.x), whose
``LabelSmoother`` also divides by ``num_items_in_batch`` (tested). They differ:

* ``convention="others"`` (fairseq, Megatron-LM, NeMo) exists only here;
* ``LabelSmoother`` shifts only for models registered in
  ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``; here ``shift=True`` says so;
* ``LabelSmoother`` takes the log-softmax in the logits' dtype (bf16/fp16
  under mixed precision); here 16-bit logits are computed in float32;
* versions whose ``LabelSmoother.__call__`` has no ``num_items_in_batch``
  parameter normalize every micro-batch by its own token count, so under
  gradient accumulation with uneven padding they weigh tokens unequally;
  this loss follows ``num_items_in_batch`` in every version that passes it.

:func:`save_run` writes a trained model's run record for ``labelsmooth compare
--runs``: logits for a classifier, per-token statistics for a causal LM; with
a :class:`KeepBest` callback, a classifier's early-stopped logits too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._reduction import mean_divisor
from labelsmooth.algorithms.state import logits_of
from labelsmooth.functional import cross_entropy
from labelsmooth.integrations._transformers_run import KeepBest, save_run

__all__ = ["CausalLMLoss", "KeepBest", "save_run"]


class CausalLMLoss:
    """Smoothed (causal) language-model cross-entropy for ``compute_loss_func`` and ``model.loss_function``.

    With ``B`` sequences of ``T`` tokens over ``V`` classes, the logits
    ``(B, T, V)`` at position ``t`` are scored against ``labels[:, t + 1]``
    (``shift=True``), or against ``labels[:, t]`` (``shift=False``, or when
    ``shift_labels`` is passed). The loss is :func:`labelsmooth.cross_entropy`
    with ``reduction="sum"`` divided by ``num_items_in_batch`` (or by the
    number of non-ignored targets when it is ``None``).

    Args:
        alpha: smoothing mass in [0, 1].
        convention: ``"uniform"`` (Transformers' and PyTorch's) or ``"others"``.
        ignore_index: label value left out of the loss and of the count.
        shift: score position ``t`` against label ``t + 1`` (causal LMs).

    Call arguments:
        logits: ``(B, T, V)`` logits, or model outputs with ``.logits`` /
            ``["logits"]`` (what ``compute_loss_func`` receives).
        labels: ``(B, T)`` token ids or ``ignore_index``.
        num_items_in_batch: the Trainer's token count for the whole step.
        shift_labels: already shifted ``(B, T)`` labels (padding-free
            collators); used as they are.
        vocab_size, ignore_index, other keywords: accepted for the model hook's
            signature; ``ignore_index`` must match the constructor's.

    Example:
        >>> import torch
        >>> loss = CausalLMLoss(0.1)
        >>> logits = torch.tensor([[[0.0, 2.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
        >>> labels = torch.tensor([[2, 1, -100]])  # one token to predict: position 0 -> label 1
        >>> round(loss(logits, labels).item(), 4)
        0.3729
    """

    def __init__(
        self, alpha: float = 0.1, *, convention: str = "uniform", ignore_index: int = v.IGNORE_INDEX,
        shift: bool = True,
    ) -> None:
        v.check_init_args(alpha=alpha, convention=convention, ignore_index=ignore_index)
        v.check_flag(shift, "shift")
        self.alpha = float(alpha)
        self.convention = convention
        self.ignore_index = ignore_index
        self.shift = shift

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, convention={self.convention!r}, "
            f"ignore_index={self.ignore_index}, shift={self.shift})"
        )

    def __call__(
        self,
        logits: Any,
        labels: Tensor | None,
        vocab_size: int | None = None,
        num_items_in_batch: Tensor | float | None = None,
        ignore_index: int | None = None,
        shift_labels: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        scores = logits_of(logits)
        if ignore_index is not None and ignore_index != self.ignore_index:
            raise v.fail("ignore_index", f"the constructor's {self.ignore_index}", ignore_index)
        targets = self._targets(labels, shift_labels)
        total = cross_entropy(
            scores, targets.to(scores.device), alpha=self.alpha, convention=self.convention,
            ignore_index=self.ignore_index, reduction="sum", dim=-1,
        )
        count = (targets != self.ignore_index).sum() if num_items_in_batch is None else num_items_in_batch
        # A step whose every token is ignored has loss 0, not NaN.
        return total / mean_divisor(count, total)

    def _targets(self, labels: Tensor | None, shift_labels: Tensor | None) -> Tensor:
        if shift_labels is not None:
            return v.check_tensor(shift_labels, "shift_labels")
        if labels is None:
            raise v.fail("labels", "a tensor of token ids (the batch has no 'labels')", None)
        labels = v.check_tensor(labels, "labels")
        if not self.shift:
            return labels
        # Position t predicts token t + 1; the last position has nothing to predict.
        return torch.nn.functional.pad(labels[..., 1:], (0, 1), value=self.ignore_index)

r"""``OnlineLabelSmoothing``: soft targets from the model's own predictions of the previous epoch.

Online label smoothing (Zhang et al., 2021) replaces the uniform distribution
of label smoothing by one distribution per class, ``S[k]``: the average of the
model's predicted distributions over the training samples of class ``k`` that
it classified correctly during the previous epoch. The target of a sample of
class ``y`` is

.. math::
    q = (1 - \alpha)\, \mathrm{onehot}(y) + \alpha\, S_{y}

and cross-entropy on ``q`` equals the paper's ``alpha_p * L_hard + (1 - alpha_p) * L_soft``
with ``alpha_p = 1 - alpha`` (cross-entropy is linear in the target); the
default ``alpha = 0.5`` is the paper's setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._dtypes import compute_dtype
from labelsmooth.algorithms.base import Algorithm
from labelsmooth.algorithms.events import Event
from labelsmooth.algorithms.logger import Logger
from labelsmooth.algorithms.state import BatchKey, State, logits_of
from labelsmooth.algorithms.target_pipeline import TargetOp, TargetPipeline, TargetTransform
from labelsmooth.schedules import Schedule, alpha_at, plain_hparams
from labelsmooth.soft_targets import SoftTargets

__all__ = ["OnlineLabelSmoothing", "online_targets"]

INITS = ("onehot", "uniform")


def _initial_matrix(num_classes: int, init: str) -> Tensor:
    if init == "uniform":
        return torch.full((num_classes, num_classes), 1.0 / num_classes, dtype=torch.float64)
    return torch.eye(num_classes, dtype=torch.float64)


def online_targets(
    targets: SoftTargets, matrix: Tensor, alpha: float, *, dtype: torch.dtype, dim: int
) -> Tensor:
    """The dense target ``(1 - alpha) * onehot(y) + alpha * matrix[y]`` of unsmoothed ``targets``.

    Built from the index maps directly (``matrix[y]`` is gathered; no one-hot
    is made). Ignored positions get all-zero rows; the class dimension is put
    at ``dim``. For a mixture the result is the same mixture of the rows.
    """
    if targets.alpha != 0.0:
        raise v.fail("targets", "unsmoothed targets for OnlineLabelSmoothing", f"alpha={targets.alpha}")
    rows = matrix.to(device=targets.device, dtype=dtype)
    mass = targets.component_mass().to(dtype).expand(targets.indices.shape)
    index = torch.where(targets.indices != targets.ignore_index, targets.indices, 0).long()
    dense = torch.zeros((*targets.batch_shape, rows.shape[0]), dtype=dtype, device=targets.device)
    for k in range(targets.num_components):
        dense += (alpha * mass[k]).unsqueeze(-1) * rows[index[k]]
        dense.scatter_add_(-1, index[k].unsqueeze(-1), ((1.0 - alpha) * mass[k]).unsqueeze(-1))
    return dense.movedim(-1, dim).contiguous()


class OnlineLabelSmoothing(TargetTransform):
    """Smooth each class towards the model's average prediction on it in the previous epoch.

    At every training ``BEFORE_LOSS`` it adds ``softmax(logits)`` (detached,
    float32, summed in float64) of the samples (or pixels) whose predicted
    class equals their label to that label's running sum, counts them, and
    leaves the dense target ``(1 - alpha) * onehot(y) + alpha * S[y]`` in the
    batch; ``AFTER_LOSS`` puts the original targets back. At ``EPOCH_END``
    (once per epoch, from every process) the sums and counts are all-reduced
    over the default process group when ``torch.distributed`` is initialized,
    each class that had a correct sample gets the new row ``S[k] = sum / count``,
    the others keep theirs, and the sums start again. It never acts on
    ``EVAL_*`` or ``PREDICT_*`` events, and it collects nothing while
    ``state.model`` is an ``nn.Module`` in eval mode.

    ``S[y]`` is a full distribution per sample, so the target is always dense
    (``N x C``; ``C x C`` for the matrix): ``materialize`` is always True here.

    Args:
        alpha: mass of ``S[y]`` in [0, 1] (default 0.5, the paper's), or a
            :class:`~labelsmooth.schedules.Schedule`.
        target_key: where the index targets are in the batch.
        num_classes: ``C``; when ``None`` it is taken from the first batch's
            logits. Give it in distributed runs, so that every process can
            all-reduce at ``EPOCH_END`` even if it saw no batch.
        init: ``S`` before the first update. ``"onehot"`` (default): the first
            epoch trains on hard targets, as the authors' code, whose zero
            initial matrix leaves only the hard loss; ``"uniform"``: the first
            epoch is plain label smoothing with ``alpha``.
        ignore_index: index targets equal to it (default -100) get zero rows
            and add nothing to the statistics.
        dim: the class dimension of the logits (``(N, C)`` or ``(N, C, d1, ...)``).

    Attributes:
        matrix: ``S``, ``(C, C)`` float64, row ``k`` the soft target of class ``k``
            (``None`` until ``C`` is known).
        epochs: how many ``EPOCH_END`` updates ``S`` has had.

    Example:
        >>> import torch
        >>> from labelsmooth import Engine, Event, State
        >>> ols = OnlineLabelSmoothing(0.5, num_classes=2)
        >>> state = State(batch=(None, torch.tensor([0, 1])), outputs=torch.tensor([[3.0, 0.0], [3.0, 0.0]]))
        >>> engine = Engine(state, [ols])
        >>> with engine.loss_events():
        ...     print(state.batch[1])
        tensor([[1., 0.],
                [0., 1.]])
        >>> engine.run_event(Event.EPOCH_END) and None
        >>> ols.matrix.float()  # class 0 learned from its correct sample; class 1 had none
        tensor([[0.9526, 0.0474],
                [0.0000, 1.0000]])

    References:
        Zhang, Jiang, Hou, Wang, Cheng and Liu, "Delving Deep into Label
        Smoothing", IEEE Transactions on Image Processing, 2021.
    """

    materialize = True
    dim: int

    def __init__(
        self,
        alpha: float | Schedule = 0.5,
        target_key: BatchKey = 1,
        *,
        num_classes: int | None = None,
        init: str = "onehot",
        ignore_index: int | None = None,
        dim: int = 1,
    ) -> None:
        # Not schedules.check_alpha: its message for a negative value offers a flag this class lacks.
        if isinstance(alpha, Schedule) and alpha.lowest < 0:
            raise v.fail("alpha", "a schedule with values in [0, 1] (no negative smoothing here)", alpha)
        self.alpha = alpha if isinstance(alpha, Schedule) else v.check_probability(alpha, "alpha")
        self.target_key = target_key
        v.check_init_args(ignore_index=ignore_index, dim=dim)
        self.num_classes = None if num_classes is None else v.check_positive_int(num_classes, "num_classes")
        self.init = v.check_choice(init, "init", INITS)
        self.ignore_index = ignore_index
        self.dim = dim
        self.epochs = 0
        self.matrix: Tensor | None = None
        self._sums: Tensor | None = None
        self._counts: Tensor | None = None
        if self.num_classes is not None:
            self._allocate(self.num_classes, torch.device("cpu"))
        self._pipeline: TargetPipeline | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "target_key": self.target_key, "num_classes": self.num_classes,
            "init": self.init, "ignore_index": self.ignore_index, "dim": self.dim,
        }

    def _allocate(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.matrix = _initial_matrix(num_classes, self.init).to(device)
        self._sums = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
        self._counts = torch.zeros(num_classes, dtype=torch.float64, device=device)

    def check_composition(self, algorithms: Sequence[Algorithm]) -> None:
        super().check_composition(algorithms)
        others = [
            a for a in algorithms
            if a is not self and isinstance(a, TargetTransform) and a.target_key == self.target_key
        ]
        if others:
            raise v.fail(
                "algorithms",
                f"OnlineLabelSmoothing as the only algorithm that changes the targets at {self.target_key!r} "
                "(its statistics need the predictions on unmixed samples, and S[y] takes the place of "
                "LabelSmoothing's uniform target)",
                [type(a).__name__ for a in others],
            )

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.BEFORE_LOSS, Event.AFTER_LOSS, Event.EPOCH_END)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event is Event.BEFORE_LOSS:
            self._before_loss(state)
        elif event is Event.AFTER_LOSS:
            if self._pipeline is not None:
                self._pipeline.restore(state, self.target_key)
                self._pipeline = None
        else:
            self.update()

    def _before_loss(self, state: State) -> None:
        pipeline = self.join(state)
        self._pipeline = pipeline
        logits = logits_of(state.outputs)
        dim = self.dim % max(logits.dim(), 1)
        if not pipeline.has_op(self):
            targets = pipeline.original
            if isinstance(targets, SoftTargets) or v.target_form(logits, targets, dim) != "index":
                raise v.fail(
                    "targets", "class indices (OnlineLabelSmoothing keeps statistics per class)",
                    "SoftTargets" if isinstance(targets, SoftTargets) else "dense targets", error=TypeError,
                )
            num_classes = logits.shape[dim]
            if self.matrix is None:
                self._allocate(num_classes, logits.device)
            elif num_classes != self.num_classes:
                raise v.fail("logits", f"{self.num_classes} classes along dim {self.dim}", num_classes)
            if _training(state):
                self._accumulate(logits.detach(), targets, dim)
            alpha = alpha_at(self.alpha, state)
            matrix = self.matrix
            if matrix is None:  # pragma: no cover (allocated above)
                raise v.fail("matrix", "a (C, C) tensor", None)

            def transform(value: Tensor | SoftTargets, logits: Tensor, dim: int) -> Tensor:
                if not isinstance(value, SoftTargets):
                    raise v.fail("targets", "class indices", "dense targets", error=TypeError)
                return online_targets(value, matrix, alpha, dtype=compute_dtype(logits.dtype), dim=dim)

            pipeline.ops.append(TargetOp(self, "custom", alpha=alpha, transform=transform))
        pipeline.render(state, self.target_key, logits)

    def _accumulate(self, logits: Tensor, targets: Tensor, dim: int) -> None:
        if self._sums is None or self._counts is None or self.num_classes is None:  # pragma: no cover
            raise v.fail("num_classes", "known before collecting statistics", None)
        num_classes = self.num_classes
        device = logits.device
        self._sums, self._counts = self._sums.to(device), self._counts.to(device)
        if self.matrix is not None:
            self.matrix = self.matrix.to(device)
        probs = torch.softmax(logits.movedim(dim, -1).reshape(-1, num_classes).float(), dim=-1)
        labels = targets.reshape(-1).to(device)
        ignore = v.IGNORE_INDEX if self.ignore_index is None else self.ignore_index
        valid = labels != ignore
        safe = torch.where(valid, labels, 0).long()
        # A mask instead of boolean indexing: no host sync, and the shapes stay fixed.
        correct = (valid & (probs.argmax(-1) == safe)).double()
        self._sums.index_add_(0, safe, probs.double() * correct.unsqueeze(-1))
        self._counts.index_add_(0, safe, correct)

    def update(self) -> None:
        """End the epoch: all-reduce the statistics, renew the rows of ``S`` that have some, reset them."""
        distributed = dist.is_available() and dist.is_initialized()
        if self._sums is None or self._counts is None or self.matrix is None:
            if distributed:
                raise v.fail(
                    "num_classes", "an int in a distributed run (this process saw no batch to infer it)", None
                )
            self.epochs += 1
            return
        packed = torch.cat([self._sums, self._counts.unsqueeze(-1)], dim=-1)
        if distributed:
            dist.all_reduce(packed)  # one call: sums and counts together
        sums, counts = packed[:, :-1], packed[:, -1]
        rows = sums / counts.clamp_min(1.0).unsqueeze(-1)
        # Averages of distributions sum to 1 up to rounding; renormalize that away.
        rows = rows / rows.sum(-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny)
        self.matrix = torch.where((counts > 0).unsqueeze(-1), rows, self.matrix.to(rows.device))
        self._sums = torch.zeros_like(self._sums)
        self._counts = torch.zeros_like(self._counts)
        self.epochs += 1

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"hparams": plain_hparams(self.hparams), "epochs": self.epochs}
        for name, value in (("matrix", self.matrix), ("sums", self._sums), ("counts", self._counts)):
            state[name] = None if value is None else value.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        matrix = state.get("matrix")
        if matrix is None:
            self.epochs = v.check_int(state.get("epochs", 0), "epochs")
            return
        matrix = v.check_tensor(matrix, "matrix")
        num_classes = int(matrix.shape[0])
        square = (num_classes, num_classes)
        shapes = {"matrix": square, "sums": square, "counts": (num_classes,)}
        if self.num_classes is not None and num_classes != self.num_classes:
            expected = f"a ({self.num_classes}, {self.num_classes}) matrix"
            raise v.fail("state['matrix']", expected, tuple(matrix.shape))
        for name, shape in shapes.items():
            value = v.check_tensor(state.get(name), f"state[{name!r}]")
            if tuple(value.shape) != shape:
                raise v.fail(f"state[{name!r}]", f"shape {shape}", tuple(value.shape))
        self.num_classes = num_classes
        self.matrix = matrix.detach().clone().double()
        self._sums = v.check_tensor(state["sums"], "sums").detach().clone().double()
        self._counts = v.check_tensor(state["counts"], "counts").detach().clone().double()
        self.epochs = v.check_int(state.get("epochs", 0), "epochs")


def _training(state: State) -> bool:
    """False while ``state.model`` is an ``nn.Module`` in eval mode."""
    model = state.model
    return not (isinstance(model, torch.nn.Module) and not model.training)

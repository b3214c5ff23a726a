"""Structured targets: a weighted mixture of index maps plus smoothing, no dense tensor.

A :class:`SoftTargets` holds ``K`` index maps ``y_k`` (the batch's shape each)
with mixing weights ``lam_k`` that sum to 1 at every position, a smoothing mass
``alpha`` and a smoothing distribution ``u`` (uniform, or a ``prior``)::

    q = (1 - alpha) * sum_k lam_k * onehot(y_k) + alpha * u * m,   m = sum_k lam_k [y_k != ignore_index]

A component whose index is ``ignore_index`` adds no mass, so a position whose
every component is ignored is an all-zero row, which every loss leaves out.
MixUp (:meth:`SoftTargets.mix`), CutMix (:meth:`SoftTargets.mix`,
:meth:`SoftTargets.paste`) and smoothing (:meth:`SoftTargets.smooth`) are
linear in the target, so they commute: any order gives the same ``q``. The
memory is ``O(K * N)`` for ``N`` positions instead of ``O(N * C)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from labelsmooth import _validation as v
from labelsmooth._smoothing import along_dim, smoothing_distribution

__all__ = ["SoftTargets", "compose_smoothing", "same_prior"]


def same_prior(first: Tensor | None, second: Tensor | None) -> bool:
    """Whether two smoothing distributions are the same (``None`` is uniform)."""
    if first is None or second is None:
        return first is second
    if first is second:
        return True
    return first.shape == second.shape and bool(torch.equal(first.cpu(), second.cpu()))


def compose_smoothing(
    alpha: float, prior: Tensor | None, more_alpha: float, more_prior: Tensor | None
) -> tuple[float, Tensor | None]:
    """Smoothing by ``alpha`` then by ``more_alpha``: ``1 - (1 - alpha)(1 - more_alpha)``.

    ``(1 - b)((1 - a) t + a u) + b u = (1 - a)(1 - b) t + (1 - (1 - a)(1 - b)) u``
    holds when both use the same ``u``; two different priors would need a
    mixture of priors, which is refused, and so is a result below -1 (the
    bound of negative smoothing). ``more_prior=None`` means "the prior
    already there" (uniform if none).
    """
    if more_prior is None:
        more_prior = prior
    if more_alpha == 0.0:
        return alpha, prior
    if alpha == 0.0:
        return more_alpha, more_prior
    if not same_prior(prior, more_prior):
        raise v.fail(
            "prior", "the prior the targets were already smoothed towards (two priors do not compose)",
            "a different prior",
        )
    total = 1.0 - (1.0 - alpha) * (1.0 - more_alpha)
    if total < -1.0:
        # Two negative smoothings compound (-1 then -1 gives -3); the bound holds for the result.
        expected = "a combined smoothing 1 - (1 - alpha)(1 - more) >= -1 (negative smoothing compounds)"
        raise v.fail("alpha", expected, f"{total:g} from {alpha:g} and {more_alpha:g}")
    return total, prior


def _leading(tensor: Tensor, ndim: int, arg: str) -> Tensor:
    """Append size-1 dims so ``tensor`` (aligned to the leading dims) has ``ndim`` dims."""
    if tensor.dim() > ndim:
        raise v.fail(
            arg, f"at most {ndim} dimensions (aligned to the leading batch dims)", tuple(tensor.shape)
        )
    return tensor.reshape(*tensor.shape, *([1] * (ndim - tensor.dim())))


def _check_broadcastable(tensor: Tensor, shape: tuple[int, ...], arg: str) -> None:
    if any(s not in (1, n) for s, n in zip(tensor.shape, shape, strict=True)):
        raise v.fail(arg, f"a shape that broadcasts to {shape} (leading dims aligned)", tuple(tensor.shape))


@dataclass(frozen=True, eq=False, repr=False)
class SoftTargets:
    r"""A target distribution as a weighted mixture of index maps plus smoothing.

    .. math::
        q_c = (1 - \alpha) \sum_k \lambda_k [y_k = c] + \alpha\, u_c \sum_k \lambda_k [y_k \ne \text{ignore}]

    Args:
        indices: ``(K, *batch_shape)`` integer class indices (or ``ignore_index``).
        weights: mixing weights ``lam``: ``(K, *batch_shape)`` or any shape that
            broadcasts to it with the leading dims aligned (``(K, N)`` gives
            per-sample weights for a ``(N, H, W)`` batch). Non-negative, and
            they sum to 1 over ``K`` at every position.
        alpha: smoothing mass in [0, 1].
        prior: ``(C,)`` distribution to smooth towards; ``None`` is uniform.
        num_classes: ``C``, if known (else the loss's logits give it).
        ignore_index: index value that adds no mass.

    Nothing is copied or written in place: the tensors are the caller's, and
    every operation returns a new object.

    Example:
        >>> import torch
        >>> t = SoftTargets.from_index(torch.tensor([0, 2]), num_classes=3)
        >>> t.mix(torch.tensor([1, 0]), 0.25).smooth(0.3).to_dense()
        tensor([[0.6250, 0.1000, 0.2750],
                [0.2750, 0.1000, 0.6250]])
    """

    indices: Tensor
    weights: Tensor
    alpha: float = 0.0
    prior: Tensor | None = None
    num_classes: int | None = None
    ignore_index: int = v.IGNORE_INDEX

    def __post_init__(self) -> None:
        indices = v.check_tensor(self.indices, "indices")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise v.fail("indices", "an integer tensor of class indices", indices.dtype, error=TypeError)
        if indices.dim() == 0:
            raise v.fail("indices", "a (K, *batch_shape) tensor", tuple(indices.shape))
        weights = v.check_tensor(self.weights, "weights")
        if not weights.is_floating_point():
            raise v.fail("weights", "a floating-point tensor", weights.dtype, error=TypeError)
        if weights.device != indices.device:
            raise v.fail("weights", f"a tensor on the indices' device {indices.device}", weights.device)
        weights = _leading(weights, indices.dim(), "weights")
        _check_broadcastable(weights, tuple(indices.shape), "weights")
        if weights.shape[0] != indices.shape[0]:
            raise v.fail("weights", f"one weight per component (K={indices.shape[0]})", weights.shape[0])
        v.check_dense_values(weights, "weights")
        v.check_sums_to_one(
            weights.sum(0), "weights", "mixing weights that sum to 1 over K at every position"
        )
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "alpha", v.check_probability(self.alpha, "alpha"))
        object.__setattr__(self, "ignore_index", v.check_int(self.ignore_index, "ignore_index"))
        num_classes = self.num_classes
        if num_classes is not None:
            num_classes = v.check_positive_int(num_classes, "num_classes")
        if self.prior is not None:
            size = v.check_tensor(self.prior, "prior").numel()
            if num_classes is not None and size != num_classes:
                raise v.fail("prior", f"a vector of shape ({num_classes},)", tuple(self.prior.shape))
            v.check_class_vector(self.prior, "prior", size, distribution=True)
            num_classes = size
        object.__setattr__(self, "num_classes", num_classes)
        if num_classes is not None:
            v.check_index_values(indices, num_classes, self.ignore_index)

    @classmethod
    def from_index(
        cls,
        targets: Tensor,
        *,
        num_classes: int | None = None,
        ignore_index: int = v.IGNORE_INDEX,
        alpha: float = 0.0,
        prior: Tensor | None = None,
    ) -> SoftTargets:
        """One index map with weight 1 (``K = 1``); ``targets`` has the batch's shape.

        Example:
            >>> import torch
            >>> SoftTargets.from_index(torch.tensor([1, 0]), num_classes=2)
            SoftTargets(batch_shape=(2,), components=1, alpha=0.0, num_classes=2, ignore_index=-100)
        """
        targets = v.check_tensor(targets, "targets")
        weights = torch.ones((1,) * (targets.dim() + 1), device=targets.device)
        return cls(targets.unsqueeze(0), weights, alpha, prior, num_classes, ignore_index)

    def _replace(self, **changes: Any) -> SoftTargets:
        # The operations below keep the invariants by construction, so the
        # result skips validation (no host syncs; works on "meta" tensors).
        new = object.__new__(SoftTargets)
        for field in dataclasses.fields(self):
            object.__setattr__(new, field.name, changes.get(field.name, getattr(self, field.name)))
        return new

    @property
    def batch_shape(self) -> torch.Size:
        """The shape of one index map: the logits' shape without the class dim."""
        return self.indices.shape[1:]

    @property
    def num_components(self) -> int:
        """``K``, the number of index maps in the mixture."""
        return int(self.indices.shape[0])

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("len() of SoftTargets with an empty batch shape")
        return int(self.batch_shape[0])

    def __repr__(self) -> str:
        return (
            f"SoftTargets(batch_shape={tuple(self.batch_shape)}, components={self.num_components}, "
            f"alpha={self.alpha}, num_classes={self.num_classes}, ignore_index={self.ignore_index})"
        )

    def component_mass(self) -> Tensor:
        """``(K, *batch_shape)`` weights with ignored components set to 0."""
        return self.weights * (self.indices != self.ignore_index)

    def mass(self) -> Tensor:
        """The total mass at each position (``batch_shape``): 1, or 0 where all is ignored."""
        return self.component_mass().sum(0)

    def rows(self) -> tuple[Tensor, Tensor]:
        """``(M, K)`` indices and weights, positions flattened in row-major order.

        This is the layout of ``logits.movedim(dim, -1).reshape(-1, C)`` that
        the kernels take.
        """
        k = self.num_components
        indices = self.indices.reshape(k, -1).t()
        return indices, self.weights.expand(self.indices.shape).reshape(k, -1).t()

    def _resolve_classes(self, num_classes: int | None) -> int:
        if num_classes is None:
            if self.num_classes is None:
                raise v.fail("num_classes", "an int (these SoftTargets do not know C)", None)
            return self.num_classes
        num_classes = v.check_int(num_classes, "num_classes")
        if self.num_classes is not None and num_classes != self.num_classes:
            raise v.fail("num_classes", f"the targets' own num_classes={self.num_classes}", num_classes)
        v.check_index_values(self.indices, num_classes, self.ignore_index)
        return num_classes

    def to_dense(
        self, num_classes: int | None = None, dtype: torch.dtype | None = None, *, dim: int = 1
    ) -> Tensor:
        """The dense target: the batch's shape with a class dimension of size C at ``dim``.

        Built in ``dtype`` directly (default: the weights' dtype, at least
        float32); no int64 one-hot is made on the way.
        """
        num_classes = self._resolve_classes(num_classes)
        if dtype is None:
            dtype = torch.promote_types(self.weights.dtype, torch.float32)
        ndim = len(self.batch_shape) + 1
        dim = v.check_int(dim, "dim")
        if not -ndim <= dim < ndim:
            raise v.fail("dim", f"an int in [{-ndim}, {ndim})", dim)
        dim %= ndim
        shape = list(self.batch_shape)
        shape.insert(dim, num_classes)
        mass = self.component_mass().to(dtype).expand(self.indices.shape)
        index = torch.where(self.indices != self.ignore_index, self.indices, 0).long()
        dense = torch.zeros(shape, dtype=dtype, device=self.device)
        for k in range(self.num_components):
            dense.scatter_add_(dim, index[k].unsqueeze(dim), (1.0 - self.alpha) * mass[k].unsqueeze(dim))
        if self.alpha != 0.0:
            u = smoothing_distribution(num_classes, self.prior, dtype=dtype, device=self.device)
            dense += self.alpha * along_dim(u, ndim, dim) * mass.sum(0).unsqueeze(dim)
        return dense

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> SoftTargets:
        """The same targets on ``device``."""
        prior = None if self.prior is None else self.prior.to(device, non_blocking=non_blocking)
        return self._replace(
            indices=self.indices.to(device, non_blocking=non_blocking),
            weights=self.weights.to(device, non_blocking=non_blocking),
            prior=prior,
        )

    def __getitem__(self, item: Any) -> SoftTargets:
        """Index along the batch: ``t[i]``, ``t[2:5]``, ``t[mask]``, ``t[:, 0]``..."""
        item = item if isinstance(item, tuple) else (item,)
        index = (slice(None), *item)
        if len(item) == 1 and self.batch_shape:
            # Only the leading batch dim is indexed: per-sample weights stay per-sample.
            shape = (self.num_components, self.batch_shape[0], *self.weights.shape[2:])
            weights = self.weights.expand(shape)[index]
        else:
            weights = self.weights.expand(self.indices.shape)[index]
        return self._replace(indices=self.indices[index], weights=weights)

    def smooth(
        self, alpha: float, *, prior: Tensor | None = None, allow_negative: bool = False
    ) -> SoftTargets:
        """Smooth further by ``alpha``: the result has ``1 - (1 - self.alpha)(1 - alpha)``.

        Exact when ``prior`` is the one already used (or either alpha is 0);
        a different prior raises ``ValueError``. ``prior=None`` keeps the
        targets' own prior (uniform if they have none). ``allow_negative``
        accepts ``alpha`` in [-1, 0), negative label smoothing (see
        :func:`labelsmooth.smooth_labels`); the result is then no longer a
        mixture, and its ``alpha`` must stay >= -1.

        Example:
            >>> import torch
            >>> SoftTargets.from_index(torch.tensor([0]), num_classes=2).smooth(0.5).smooth(0.5).alpha
            0.75
        """
        alpha = v.check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
        total, prior = compose_smoothing(self.alpha, self.prior, alpha, prior)
        return self._replace(alpha=total, prior=prior)

    def _permuted(self, perm: Tensor, arg: str = "perm") -> tuple[Tensor, Tensor]:
        perm = v.check_tensor(perm, arg)
        if perm.dim() != 1 or perm.is_floating_point() or not self.batch_shape or (
            perm.numel() != self.batch_shape[0]
        ):
            size = self.batch_shape[0] if self.batch_shape else 0
            raise v.fail(arg, f"an integer vector of length {size} (a batch permutation)", tuple(perm.shape))
        perm = perm.to(self.device)
        weights = self.weights if self.weights.shape[1] == 1 else self.weights[:, perm]
        return self.indices[:, perm], weights

    def _along_batch(self, value: Tensor, arg: str) -> Tensor:
        value = _leading(value.to(self.device), len(self.batch_shape), arg)
        _check_broadcastable(value, tuple(self.batch_shape), arg)
        return value.unsqueeze(0)

    def mix(self, perm: Tensor, lam: float | Tensor) -> SoftTargets:
        """MixUp: ``(1 - lam) * self + lam * self[perm]``.

        Args:
            perm: ``(N,)`` batch permutation (``N = batch_shape[0]``).
            lam: a number in [0, 1], or a tensor of them aligned to the leading
                batch dims: ``(N,)`` per sample, ``(N, H, W)`` per pixel.

        Returns:
            SoftTargets with ``2K`` components; ``alpha`` and ``prior`` are kept
            (smoothing commutes with mixing).
        """
        indices, weights = self._permuted(perm)
        if isinstance(lam, Tensor):
            if not lam.is_floating_point():
                raise v.fail("lam", "a floating-point tensor", lam.dtype, error=TypeError)
            v.check_values(lam, "lam", "values", high=1.0)
            lam_t = self._along_batch(lam, "lam")
        else:
            lam_t = torch.tensor(v.check_probability(lam, "lam"), device=self.device)
        lam_t = lam_t.to(torch.promote_types(self.weights.dtype, lam_t.dtype))
        kept, taken = self.weights * (1 - lam_t), weights * lam_t
        shape = [max(a, b) for a, b in zip(kept.shape, taken.shape, strict=True)]
        return self._replace(
            indices=torch.cat([self.indices, indices]),
            weights=torch.cat([kept.expand(shape), taken.expand(shape)]),
        )

    def paste(self, perm: Tensor, mask: Tensor) -> SoftTargets:
        """CutMix for dense prediction: where ``mask`` is true, take ``self[perm]``.

        Args:
            perm: ``(N,)`` batch permutation.
            mask: bool tensor aligned to the leading batch dims, e.g. ``(N, H, W)``
                or ``(1, H, W)`` for one box shared by the batch.

        Returns:
            New SoftTargets with new index maps (the same ``K``); nothing is
            written into the original tensors.
        """
        indices, weights = self._permuted(perm)
        mask = v.check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise v.fail("mask", "a bool tensor", mask.dtype, error=TypeError)
        mask = self._along_batch(mask, "mask")
        if weights is not self.weights:
            weights = torch.where(mask, weights, self.weights)
        return self._replace(indices=torch.where(mask, indices, self.indices), weights=weights)

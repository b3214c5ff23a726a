"""Every argument check of the library, with one error vocabulary.

Each message names the argument, what is allowed and what was received:
``alpha: expected a real number in [0, 1], got nan``. Nothing here uses
``assert``, which ``python -O`` removes. Checks come in three tiers:

1. Python values (``alpha``, ``reduction``, ...): where they are given, a
   module's ``__init__`` or the top of a function.
2. Shapes and dtypes: on every call. They cost nothing under ``torch.compile``
   (the traced graph is specialized on them).
3. Tensor contents (index range, finite or negative values, rows that sum to
   1): in eager mode only, and only while :func:`content_checks` allows them.
   Each needs a host read of the result (a sync on a GPU); under tracing they
   are skipped, so a compiled graph never syncs.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")
CONVENTIONS = ("uniform", "others")

#: PyTorch's ``ignore_index`` default: the index target value left out of a loss.
IGNORE_INDEX = -100


class _Unset:
    """The type of :data:`UNSET`."""

    def __repr__(self) -> str:
        return "<not given>"


#: Marks an option as not given, so that an alias (``label_smoothing=`` for
#: ``alpha=``) can stand in for it while ``None`` is refused like any non-number.
UNSET: Any = _Unset()

#: What a negative ``alpha`` needs, in every message that refuses one.
NEGATIVE_ALPHA = (
    "allow_negative=True (negative label smoothing: Wei et al., \"To Smooth or Not? When Label "
    "Smoothing Meets Noisy Labels\", ICML 2022; the loss is then unbounded below)"
)

#: Tolerance for "sums to 1" checks: generous enough for float32 rounding of
#: rows with 10^5 entries, tight enough to catch a wrong distribution.
PROBABILITY_ATOL = 1e-3

TargetForm = Literal["index", "dense"]

_CONTENT_CHECKS = contextvars.ContextVar("labelsmooth_content_checks", default=True)


@contextlib.contextmanager
def content_checks(enabled: bool) -> Iterator[None]:
    """Turn tier-3 checks (tensor contents) on or off inside a ``with`` block.

    ``with labelsmooth.content_checks(False):`` skips every check that reads
    tensor values, for GPU training that must never wait on the host. Bad
    values then give wrong numbers (or a device-side assertion) instead of
    a ``ValueError``. Shape, dtype and argument checks always run.

    Example:
        >>> import torch, labelsmooth
        >>> with labelsmooth.content_checks(False):
        ...     loss = labelsmooth.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]))
        >>> round(loss.item(), 4)
        1.0986
    """
    token = _CONTENT_CHECKS.set(check_flag(enabled, "enabled"))
    try:
        yield
    finally:
        _CONTENT_CHECKS.reset(token)


def may_read_host(device: torch.device) -> bool:
    """Whether a shortcut may read a tensor value on the host: eager mode, content
    checks on, and a CPU tensor, where a read costs no device sync."""
    return device.type == "cpu" and checks_contents()


def checks_contents() -> bool:
    """Whether tier-3 checks run now: eager mode, and not turned off by :func:`content_checks`."""
    return not torch.compiler.is_compiling() and _CONTENT_CHECKS.get()


def fail(arg: str, expected: str, got: object, *, error: type[Exception] = ValueError) -> Exception:
    """Build the library's one error message: ``arg: expected ..., got ...``."""
    return error(f"{arg}: expected {expected}, got {got!r}")


def _real(value: object, arg: str, expected: str) -> float:
    """``value`` as a float: a real number (not a bool) or a one-element float tensor."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
            return float(value.item())
        raise fail(arg, expected, value, error=TypeError)
    return float(value)


def check_probability(value: object, arg: str = "alpha") -> float:
    """Return ``value`` as a float in [0, 1], or raise naming ``arg``."""
    number = _real(value, arg, "a real number in [0, 1]")
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise fail(arg, "a real number in [0, 1]", number)
    return number


def check_smoothing_mass(value: object, arg: str = "alpha", *, allow_negative: object = False) -> float:
    """Return the smoothing mass ``value`` as a float in [0, 1], or in [-1, 1] with
    ``allow_negative``; a negative value without the flag gets a message naming it.

    The bound -1 mirrors the bound 1, in either convention: the target is
    ``q(a) = onehot + a (v - onehot)`` (``v`` uniform, or ``1 / (C - 1)`` off the
    true class), so ``q(-a) = 2 onehot - q(a)``, and ``alpha = -1`` is the fully
    smoothed target reflected through the one-hot.
    """
    low = -1.0 if check_flag(allow_negative, "allow_negative") else 0.0
    expected = f"a real number in [{low:g}, 1]"
    number = _real(value, arg, expected)
    if low == 0.0 and -1.0 <= number < 0.0:
        raise fail(arg, f"{expected}, or one in [-1, 0) with {NEGATIVE_ALPHA}", number)
    if not math.isfinite(number) or not low <= number <= 1.0:
        raise fail(arg, expected, number)
    return number


def check_smoothing(alpha: object, label_smoothing: object, *, allow_negative: object = False) -> float:
    """The smoothing mass from ``alpha`` or its PyTorch name ``label_smoothing``
    (:data:`UNSET`: not given; neither given: 0), checked by :func:`check_smoothing_mass`.
    Both given with different values is an error."""
    if label_smoothing is UNSET:
        return check_smoothing_mass(0.0 if alpha is UNSET else alpha, "alpha", allow_negative=allow_negative)
    named = check_smoothing_mass(label_smoothing, "label_smoothing", allow_negative=allow_negative)
    if alpha is UNSET:
        return named
    value = check_smoothing_mass(alpha, "alpha", allow_negative=allow_negative)
    if value != named:
        raise fail("alpha and label_smoothing", "one of them, or equal values (label_smoothing is "
                   "PyTorch's name for alpha)", f"alpha={value}, label_smoothing={named}")
    return value


def check_softcap(value: object) -> float | None:
    """``None`` or a finite real number > 0: the logit cap ``k`` of ``k tanh(z / k)``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail("softcap", "None or a real number > 0", value, error=TypeError)
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise fail("softcap", "None or a finite real number > 0", number)
    return number


def check_num_items(value: object, reduction: str) -> Tensor | int | None:
    """``None``, a positive int or a 0-dim real tensor without gradient (its value > 0 is a
    tier-3 check): the count that divides the summed loss. Not with ``reduction="none"``."""
    if value is None:
        return None
    if reduction == "none":
        raise fail("num_items_in_batch", "None with reduction='none' (it divides a summed loss)", value)
    if isinstance(value, Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex() or value.requires_grad:
            expected = "an int or a 0-dim real tensor without gradient"
            raise fail("num_items_in_batch", expected, (value.dtype, tuple(value.shape)), error=TypeError)
        if checks_contents() and not bool(torch.isfinite(value) & (value > 0)):
            raise fail("num_items_in_batch", "a finite count > 0", value.item())
        return value
    number = check_int(value, "num_items_in_batch")
    if number < 1:
        raise fail("num_items_in_batch", "a positive int or a 0-dim tensor", number)
    return number


def check_choice(value: object, arg: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming ``arg``."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise fail(arg, "one of " + ", ".join(repr(c) for c in options), value)
    return value


def check_reduction(value: object) -> str:
    return check_choice(value, "reduction", REDUCTIONS)


def check_convention(value: object) -> str:
    return check_choice(value, "convention", CONVENTIONS)


def check_flag(value: object, arg: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False``, else raise a ``TypeError``."""
    if not isinstance(value, bool):
        raise fail(arg, "True or False", value, error=TypeError)
    return value


def check_nonnegative(value: object, arg: str) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(arg, "a real number >= 0", value, error=TypeError)
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise fail(arg, "a finite real number >= 0", number)
    return number


def check_int(value: object, arg: str) -> int:
    """Return ``value`` if it is an int (not a bool), else raise a ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(arg, "an int", value, error=TypeError)
    return int(value)


def check_positive_int(value: object, arg: str) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise naming ``arg``."""
    number = check_int(value, arg)
    if number < 1:
        raise fail(arg, "a positive int", number)
    return number


def check_optional_int(value: object, arg: str) -> int | None:
    return None if value is None else check_int(value, arg)


def check_tensor(value: object, arg: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise fail(arg, "a torch.Tensor", type(value).__name__, error=TypeError)
    return value


def check_logits(logits: object, dim: int) -> tuple[Tensor, int]:
    """Check the logits and normalize ``dim``; return ``(logits, dim)``."""
    logits = check_tensor(logits, "logits")
    if not logits.is_floating_point():
        raise fail("logits", "a floating-point tensor", logits.dtype, error=TypeError)
    if logits.dim() == 0:
        raise fail("logits", "a tensor with a class dimension", tuple(logits.shape))
    dim = check_int(dim, "dim")
    if not -logits.dim() <= dim < logits.dim():
        raise fail("dim", f"an int in [{-logits.dim()}, {logits.dim()})", dim)
    return logits, dim % logits.dim()


def target_form(logits: Tensor, targets: object, dim: int) -> TargetForm:
    """Say whether ``targets`` are class indices or dense probabilities for ``logits``.

    Index targets have the logits' shape without the class dimension and an
    integer dtype. Dense targets have the logits' shape: floats, or an integer
    or bool tensor, which at that shape can only be a one-hot (Composer's
    ``F.one_hot(...)``, MONAI's uint8 maps): its entries must be 0 or 1 (tier
    3), and :func:`dense_targets` casts it for the losses.
    """
    targets = check_tensor(targets, "targets")
    index_shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    if targets.shape == logits.shape:
        if targets.is_complex():
            raise fail("targets", "real dense targets of the logits' shape", targets.dtype, error=TypeError)
        if not targets.is_floating_point() and checks_contents():
            off = (targets != 0) & (targets != 1)
            if bool(off.any()):
                expected = f"0 or 1 in an integer one-hot of the logits' shape ({targets.dtype})"
                raise fail("targets", expected, targets[off][0].item())
        return "dense"
    if targets.shape == index_shape:
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise fail(
                "targets",
                f"an integer tensor for class-index targets of shape {tuple(index_shape)}",
                targets.dtype,
                error=TypeError,
            )
        return "index"
    raise fail(
        "targets",
        f"class indices of shape {tuple(index_shape)} or probabilities of shape "
        f"{tuple(logits.shape)} (logits' shape, class dim {dim})",
        tuple(targets.shape),
    )


def check_index_values(targets: Tensor, num_classes: int, ignore_index: int | None,
                       arg: str = "targets") -> None:
    """Every index is in ``[0, num_classes)`` or equal to ``ignore_index`` (tier 3)."""
    if not checks_contents():
        return
    valid = (targets >= 0) & (targets < num_classes)
    if ignore_index is not None:
        valid |= targets == ignore_index
    if not bool(valid.all()):
        bad = targets[~valid][0].item()
        allowed = f"class indices in [0, {num_classes})"
        if ignore_index is not None:
            allowed += f" or ignore_index={ignore_index}"
        raise fail(arg, allowed, bad)


def dense_targets(targets: Tensor, dtype: torch.dtype) -> Tensor:
    """Dense targets checked (tier 3) and as floats: an integer or bool one-hot is cast to ``dtype``.

    Float targets come back as they are (the caller's object, in its dtype).
    """
    check_dense_values(targets)
    return targets if targets.is_floating_point() else targets.to(dtype)


def check_dense_values(targets: Tensor, arg: str = "targets", *, allow_negative: bool = False) -> None:
    """Dense targets are finite and non-negative (tier 3); finite only with ``allow_negative``
    (targets smoothed by a negative alpha)."""
    check_values(targets, arg, "probabilities", low=-math.inf if allow_negative else 0.0)


def check_values(
    value: Tensor, arg: str, what: str = "entries", *, low: float = 0.0, high: float = math.inf,
) -> None:
    """Every entry of ``value`` is finite and in ``[low, high]`` (tier 3)."""
    if not checks_contents():
        return
    if not bool(torch.isfinite(value).all()):
        raise fail(arg, f"finite {what}", "a tensor with NaN or infinite entries")
    allowed = f"non-negative {what}" if high == math.inf and low == 0 else f"{what} in [{low:g}, {high:g}]"
    if bool((value < low).any()):
        raise fail(arg, allowed, float(value.min().item()))
    if bool((value > high).any()):
        raise fail(arg, allowed, float(value.max().item()))


def check_sums_to_one(total: Tensor, arg: str, what: str) -> None:
    """Every entry of ``total`` is 1 up to rounding (tier 3)."""
    if not checks_contents():
        return
    error = (total.double() - 1.0).abs()
    if bool((error > PROBABILITY_ATOL).any()):
        worst = float(total.flatten()[error.argmax()].item())
        raise fail(arg, what, f"sum {worst:.6g}")


def check_class_vector(
    value: object, arg: str, num_classes: int, *, distribution: bool
) -> Tensor | None:
    """Check a length-C vector (``weight`` or ``prior``).

    A ``distribution`` must also be non-negative and sum to 1 (up to rounding).
    """
    if value is None:
        return None
    vector = check_tensor(value, arg)
    if not vector.is_floating_point():
        raise fail(arg, "a floating-point tensor", vector.dtype, error=TypeError)
    if vector.shape != (num_classes,):
        raise fail(arg, f"a vector of shape ({num_classes},), one entry per class", tuple(vector.shape))
    check_values(vector, arg)
    if distribution:
        check_sums_to_one(vector.double().sum(), arg, "entries that sum to 1")
    return vector


def check_init_args(**kwargs: Any) -> None:
    """Validate the Python-valued options a module or algorithm stores.

    Recognized names: ``alpha`` (in [0, 1]), ``allow_negative``, ``reduction``, ``convention``,
    ``ignore_index``, ``dim``, ``smooth``, ``softmax``, ``batch``, ``z_loss``, ``softcap``,
    ``return_z_loss``.
    Tensor-valued options are checked per call, once C is known.
    """
    checks: dict[str, Callable[[Any, str], object]] = {
        "alpha": check_probability,
        "allow_negative": check_flag,
        "reduction": lambda value, _: check_reduction(value),
        "convention": lambda value, _: check_convention(value),
        "ignore_index": check_optional_int,
        "dim": check_int,
        "smooth": check_nonnegative,
        "softmax": check_flag,
        "batch": check_flag,
        "z_loss": check_nonnegative,
        "softcap": lambda value, _: check_softcap(value),
        "return_z_loss": check_flag,
    }
    for name, value in kwargs.items():
        checks[name](value, name)


def check_chunk_size(value: object) -> int | None:
    """``None`` or a positive int: rows per chunk of a chunked kernel."""
    return None if value is None else check_positive_int(value, "chunk_size")


def check_linear_inputs(hidden: object, weight: object, bias: object, targets: object) -> None:
    """Shapes and dtypes of a fused output layer, under ``F.linear_cross_entropy``'s names:
    ``input (..., H)``, ``linear_weight (V, H)``, ``linear_bias (V,)``, index ``target`` of
    shape ``input.shape[:-1]``."""
    hidden = check_tensor(hidden, "input")
    weight = check_tensor(weight, "linear_weight")
    targets = check_tensor(targets, "target")
    if not hidden.is_floating_point() or hidden.dim() < 1:
        raise fail("input", "a floating-point tensor of shape (..., H)", (hidden.dtype, tuple(hidden.shape)))
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise fail("linear_weight", f"a matrix of shape (V, {hidden.shape[-1]})", tuple(weight.shape))
    if weight.dtype != hidden.dtype:
        raise fail("linear_weight", f"the input's dtype {hidden.dtype}", weight.dtype, error=TypeError)
    if bias is not None:
        bias = check_tensor(bias, "linear_bias")
        if bias.shape != (weight.shape[0],) or bias.dtype != hidden.dtype:
            expected = f"a vector of shape ({weight.shape[0]},) and dtype {hidden.dtype}"
            raise fail("linear_bias", expected, (bias.dtype, tuple(bias.shape)))
    if targets.shape != hidden.shape[:-1]:
        raise fail("target", f"class indices of shape {tuple(hidden.shape[:-1])}", tuple(targets.shape))
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise fail("target", "an integer tensor of class indices", targets.dtype, error=TypeError)


def check_temperatures(temperatures: object) -> Tensor:
    """A temperature grid as a float64 CPU tensor ``(G,)``: finite, positive, increasing, holding 1.0."""
    try:
        grid = torch.as_tensor(temperatures).detach().double().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise fail("temperatures", "a sequence of temperatures", type(temperatures).__name__,
                   error=TypeError) from None
    ok = grid.dim() == 1 and grid.numel() >= 1 and bool(torch.isfinite(grid).all()) and bool((grid > 0).all())
    if not ok or not bool((grid[1:] > grid[:-1]).all()) or not bool((grid == 1.0).any()):
        raise fail("temperatures", "increasing positive temperatures that include 1.0", grid.tolist())
    return grid

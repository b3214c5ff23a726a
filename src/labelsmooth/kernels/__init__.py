"""Row kernels behind :mod:`labelsmooth.functional`.

A kernel sees logits flattened to ``(M, C)`` (class dimension last) or
``(B, C, S)``, and index targets flattened to ``(M,)`` (or ``(M, K)`` mixture
components with weights), and returns the per-row loss ``(M,)`` in the compute
dtype, or its sum over a divisor (with PaLM's z-loss, ``(loss, z-loss part)``:
``index_cross_entropy_z_loss``). The math is :mod:`labelsmooth.kernels.rowmath`;
:func:`backend` says which kernel runs it (:mod:`labelsmooth.kernels.dispatch`
holds the rule and the fallback), :func:`use_backend` chooses one for a
``with`` block. ``fused_linear_cross_entropy`` fuses the output projection in
as well.
"""

from labelsmooth.kernels.cross_entropy import index_cross_entropy_rows, index_cross_entropy_z_loss
from labelsmooth.kernels.dispatch import backend, set_backend, use_backend
from labelsmooth.kernels.linear import fused_linear_cross_entropy

__all__ = [
    "backend",
    "fused_linear_cross_entropy",
    "index_cross_entropy_rows",
    "index_cross_entropy_z_loss",
    "set_backend",
    "use_backend",
]

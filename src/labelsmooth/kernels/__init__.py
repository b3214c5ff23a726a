"""Row kernels behind :mod:`labelsmooth.functional`.

A kernel sees logits flattened to ``(M, C)`` (class dimension last) and index
targets flattened to ``(M,)`` (or ``(M, K)`` mixture components with weights),
and returns the per-row loss ``(M,)`` in the compute dtype. Reduction and the
mean's denominator are the caller's job.

``index_cross_entropy_rows`` is the row-chunked kernel of
:mod:`labelsmooth.kernels.chunked` (no ``(M, C)`` buffer but the gradient);
:mod:`labelsmooth.kernels.reference` keeps the plain log-softmax version.
``fused_linear_cross_entropy`` (:mod:`labelsmooth.kernels.linear`) fuses the
output projection in as well.
"""

from labelsmooth.kernels.chunked import index_cross_entropy_rows
from labelsmooth.kernels.linear import fused_linear_cross_entropy

__all__ = ["fused_linear_cross_entropy", "index_cross_entropy_rows"]

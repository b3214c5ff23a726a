"""Row kernels behind :mod:`labelsmooth.functional`.

A kernel sees logits flattened to ``(M, C)`` (class dimension last) and index
targets flattened to ``(M,)``, and returns the per-row loss ``(M,)`` in the
compute dtype. Reduction and the mean's denominator are the caller's job.
"""

from labelsmooth.kernels.reference import index_cross_entropy_rows

__all__ = ["index_cross_entropy_rows"]

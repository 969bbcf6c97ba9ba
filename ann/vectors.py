"""What a vector must be before an index takes it: the index's dimension, finite float32
values, and (for cosine) not zero. Each refusal is an ``InvalidVector`` that names the problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nrtrec.ann.errors import InvalidVector
from nrtrec.ann.spec import IndexSpec
from nrtrec.schemas.query_api import Metric


def checked_query(spec: IndexSpec, vector: Any) -> np.ndarray:
    """One query as a (1, dim) float32 matrix. The common case, a float32 array of the
    right dimension, is checked by one dot product: a finite, positive squared norm means
    every element is finite and not all are zero (what cosine needs). Anything else takes
    the full check, which names the problem; a profile of search put a quarter of its time
    in that check (np.errstate, isfinite, any) before this."""
    if (
        isinstance(vector, np.ndarray)
        and vector.dtype == np.float32
        and vector.shape == (spec.dim,)
        and vector.flags.c_contiguous
    ):
        squared = float(vector @ vector)
        if 0.0 < squared < math.inf:
            return vector.reshape(1, spec.dim)
    return checked_matrix(spec, [vector] if _is_flat(vector) else vector, 1)


def checked_matrix(spec: IndexSpec, vectors: Any, n: int) -> np.ndarray:
    try:
        # A value past float32's range becomes inf, refused below with the other non-finite.
        with np.errstate(over="ignore"):
            matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        for vector in vectors:
            if isinstance(vector, Sequence) and len(vector) != spec.dim:
                raise _wrong_dimension(spec, len(vector)) from None
        raise InvalidVector(f"vectors must be lists of numbers: {e}") from None
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise InvalidVector(f"expected {n} vector(s) of dimension {spec.dim}")
    if matrix.shape[1] != spec.dim:
        raise _wrong_dimension(spec, matrix.shape[1])
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise InvalidVector(
            f"vector {int(np.argmin(finite))} holds NaN or infinity (or overflows float32)"
        )
    if spec.metric is Metric.COSINE:
        zero = ~np.any(matrix, axis=1)
        if zero.any():
            raise InvalidVector(f"vector {int(np.argmax(zero))} is zero; cosine needs a direction")
    return np.ascontiguousarray(matrix)


def _wrong_dimension(spec: IndexSpec, dim: int) -> InvalidVector:
    return InvalidVector(
        f"index {spec.name!r} v{spec.model_version} has dimension {spec.dim}, "
        f"got a vector of dimension {dim}"
    )


def _is_flat(vector: Any) -> bool:
    if isinstance(vector, np.ndarray):
        return vector.ndim == 1
    return (
        not vector or isinstance(vector[0], str) or not isinstance(vector[0], Sequence | np.ndarray)
    )

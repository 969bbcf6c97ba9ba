"""What a vector must be before an index takes it: the index's dimension, finite float32
values, (for cosine) not zero, and (for hamming) bits: every value 0 or 1. Each refusal is an
``InvalidVector`` that names the problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nrtrec.ann.errors import InvalidVector
from nrtrec.ann.spec import IndexSpec
from nrtrec.schemas.query_api import Metric

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def checked_query(spec: IndexSpec, vector: Any) -> np.ndarray:
    """One query as a (1, dim) float32 matrix. The common case, a float32 array of the
    right dimension, is checked by one dot product: a finite, positive squared norm means
    every element is finite and not all are zero (what cosine needs). Anything else takes
    the full check, which names the problem; a profile of search put a quarter of its time
    in that check (np.errstate, isfinite, any) before this. A hamming query (bits, which may
    all be 0) is checked for bits instead."""
    if (
        isinstance(vector, np.ndarray)
        and vector.dtype == np.float32
        and vector.shape == (spec.dim,)
        and vector.flags.c_contiguous
    ):
        if spec.metric is Metric.HAMMING:
            if ((vector == 0) | (vector == 1)).all():
                return vector.reshape(1, spec.dim)
        else:
            squared = float(vector @ vector)
            if 0.0 < squared < math.inf:
                return vector.reshape(1, spec.dim)
    elif type(vector) is list and len(vector) == spec.dim and spec.metric is not Metric.HAMMING:
        # A query from JSON. Read in float64 (no overflow warning to silence, which np.errstate
        # made the dearest part of a search), and checked as above once it fits float32.
        query = _float32_or_none(vector)
        if query is not None:
            return query.reshape(1, spec.dim)
    return checked_matrix(spec, [vector] if _is_flat(vector) else vector, 1)


def _float32_or_none(values: list[Any]) -> np.ndarray | None:
    try:
        wide = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    # NaN fails the comparison; a value past float32's range would become inf.
    if wide.ndim != 1 or not float(np.abs(wide).max()) <= _FLOAT32_MAX:
        return None
    narrow = wide.astype(np.float32)
    # Positive: not all zero once narrowed (1e-50 is 0 in float32), as cosine needs.
    return narrow if 0.0 < float(narrow @ narrow) < math.inf else None


def checked_matrix(spec: IndexSpec, vectors: Any, n: int) -> np.ndarray:
    hamming = spec.metric is Metric.HAMMING
    try:
        # A value past float32's range becomes inf, refused below with the other non-finite.
        # Bits are checked in float64, as JSON gives them: float32 would round 1e-50 to 0.
        with np.errstate(over="ignore"):
            matrix = np.asarray(vectors, dtype=np.float64 if hamming else np.float32)
    except (TypeError, ValueError) as e:
        for vector in vectors:
            if isinstance(vector, Sequence) and len(vector) != spec.dim:
                raise _wrong_dimension(spec, len(vector)) from None
        raise InvalidVector(f"vectors must be lists of numbers: {e}") from None
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise InvalidVector(f"expected {n} vector(s) of dimension {spec.dim}")
    if matrix.shape[1] != spec.dim:
        raise _wrong_dimension(spec, matrix.shape[1])
    if hamming:
        return _checked_bits(matrix)
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


def _checked_bits(matrix: np.ndarray) -> np.ndarray:
    # NaN and infinity are not bits either: named here with their position, like 0.5 or 2.
    ones = matrix == 1
    bad = ~(ones | (matrix == 0))
    if bad.any():
        vector, position = (int(i) for i in np.argwhere(bad)[0])
        value = float(matrix[vector, position])
        raise InvalidVector(
            f"vector {vector}, position {position}: {value!r} is not a bit; "
            "hamming takes 0 or 1 for each bit"
        )
    # Exactly 0.0 and 1.0 (no -0.0) in float32, the form the index and its graph keep.
    return ones.astype(np.float32)


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

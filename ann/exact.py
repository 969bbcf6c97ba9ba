"""Exact search: the ``k`` nearest of some rows by a matrix product, for filters that keep few
items (where a filtered graph walk would visit most of the graph) and as the fallback when the
graph finds fewer than ``k``. Scores are those of ``VectorIndex.search`` (l2: the distance;
hamming: the number of differing bits; ip and cosine: the similarity)."""

from __future__ import annotations

import numpy as np

from nrtrec.schemas.query_api import Metric


def exact_top_k(
    vectors: np.ndarray,
    sq_norms: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    k: int,
    metric: Metric,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (of ``rows``) of the ``k`` nearest to ``query``, nearest first, and their
    scores. ``vectors`` are stored vectors by row (unit length for cosine), ``sq_norms`` their
    squared norms (for l2 and hamming); ``rows`` is not empty."""
    # Without deletions the live rows are a prefix: a view spares copying the vectors.
    dense = len(rows) == rows[-1] + 1
    chosen = vectors[: len(rows)] if dense else vectors[rows]
    if metric.smaller_is_nearer:
        # Distances, from the squared L2 distance |x|^2 - 2 x.q + |q|^2. For 0/1 vectors that
        # is the Hamming distance itself, and exact in float32: every product and partial sum
        # is an integer of at most dim (4096) < 2^24. One BLAS product over the float32 copy
        # the index keeps anyway beats packing the rows' bits and counting them with a lookup
        # table (numpy 1.26 has no bitwise_count) on every search.
        # Clipped: rounding can make a tiny squared distance negative (l2).
        norms = sq_norms[: len(rows)] if dense else sq_norms[rows]
        keys = np.maximum(norms - 2.0 * (chosen @ query) + query @ query, 0.0)
    else:
        q = query / np.linalg.norm(query) if metric is Metric.COSINE else query
        keys = -(chosen @ q)
    k = min(k, len(rows))
    top = np.argpartition(keys, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    top = top[np.argsort(keys[top], kind="stable")]
    if metric is Metric.L2:
        scores = np.sqrt(keys[top])
    else:
        scores = keys[top] if metric.smaller_is_nearer else -keys[top]
    return rows[top], scores

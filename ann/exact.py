"""Exact search: the ``k`` nearest of some rows by a matrix product, for filters that keep few
items (where a filtered graph walk would visit most of the graph) and as the fallback when the
graph finds fewer than ``k``. Scores are those of ``VectorIndex.search`` (l2: the distance;
ip and cosine: the similarity)."""

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
    squared norms (for l2); ``rows`` is not empty."""
    # Without deletions the live rows are a prefix: a view spares copying the vectors.
    dense = len(rows) == rows[-1] + 1
    chosen = vectors[: len(rows)] if dense else vectors[rows]
    if metric is Metric.L2:
        # Clipped: rounding can make a tiny squared distance negative.
        norms = sq_norms[: len(rows)] if dense else sq_norms[rows]
        keys = np.maximum(norms - 2.0 * (chosen @ query) + query @ query, 0.0)
    else:
        q = query / np.linalg.norm(query) if metric is Metric.COSINE else query
        keys = -(chosen @ q)
    k = min(k, len(rows))
    top = np.argpartition(keys, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    top = top[np.argsort(keys[top], kind="stable")]
    scores = np.sqrt(keys[top]) if metric is Metric.L2 else -keys[top]
    return rows[top], scores

"""The seeded data set, its exact nearest neighbours (the ground truth) and recall against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.common import unit
from bench.query_node.params import BUCKETS, Params


@dataclass
class Data:
    """Unit vectors (cosine), queries drawn from the same mixture, and exact answers."""

    vectors: np.ndarray  # (n, dim) float32, row i is item id str(i) and hnswlib label i
    queries: np.ndarray  # (queries, dim) float32
    buckets: np.ndarray  # (n,) int, the `bucket` attribute
    exact: np.ndarray  # (queries, max k) rows of the exact nearest items, nearest first


def make_data(p: Params) -> Data:
    """A Gaussian mixture on the unit sphere: ``clusters`` random centres, each point its centre
    plus isotropic noise of total norm about ``spread``, normalised. Real embeddings cluster;
    uniform random vectors (``--spread`` large) are a worst case for HNSW."""
    rng = np.random.default_rng(p.seed)
    centres = unit(rng.standard_normal((p.clusters, p.dim), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        which = rng.integers(0, p.clusters, m)
        noise = rng.standard_normal((m, p.dim), dtype=np.float32)
        return unit(centres[which] + noise * np.float32(p.spread / math.sqrt(p.dim)))

    vectors = draw(p.n)
    queries = draw(p.queries)
    buckets = rng.integers(0, BUCKETS, p.n)
    exact = exact_knn(vectors, queries, max(p.ks))
    return Data(vectors, queries, buckets, exact)


def exact_knn(
    vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Row numbers of the ``k`` most similar vectors (among ``rows``) per query, nearest first;
    fewer columns when fewer rows match."""
    pool = vectors if rows is None else vectors[rows]
    k = min(k, len(pool))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ pool.T
        if k < len(pool):
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(pool)), sims.shape)
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + 256] = np.take_along_axis(top, order, axis=1)
    return out if rows is None else rows[out]


def recall(found: Sequence[Sequence[int]], exact: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & exact[:k]| / min(k, items that qualify)."""
    k = min(k, exact.shape[1])
    hits = [len(set(f[:k]) & set(e[:k].tolist())) / k for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))

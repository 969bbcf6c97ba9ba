"""The seeded data set (``--data``), its exact nearest neighbours (the ground truth) and recall
against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.common import unit
from bench.datasets import TOWER_ITEMS, TOWER_USERS, tower_data, tower_like, uniform_data
from bench.query_node.params import BUCKETS, Params


@dataclass
class Data:
    """Unit vectors (cosine), queries drawn from the same mixture, and exact answers."""

    vectors: np.ndarray  # (n, dim) float32, row i is item id str(i) and hnswlib label i
    queries: np.ndarray  # (queries, dim) float32
    buckets: np.ndarray  # (n,) int, the `bucket` attribute
    exact: np.ndarray  # (queries, max k) rows of the exact nearest items, nearest first


# What each data set is, in words, for the JSON (``data.what``).
WHAT = {
    "clusters": "Gaussian mixture on the unit sphere: --clusters centres, noise of norm about "
    "--spread around each, normalised; queries from the same mixture",
    "uniform": "unit vectors drawn uniformly on the sphere, queries from the same distribution: "
    "no clusters for a graph to exploit",
    "tower": f"the item tower's own vectors of the whole MovieLens-100k catalogue "
    f"({TOWER_ITEMS:,} items: --n and --dim do not apply), a pair trained in the run for "
    f"--epochs, queried by the user tower's vectors of sampled users' last 20 views (at most "
    f"{TOWER_USERS} queries, one per user). Only {TOWER_ITEMS:,} items, and that is the "
    "point: the catalogue as it is. A small index, so HTTP's fixed cost weighs more against "
    "hnswlib; the node answers unfiltered searches of it exactly (at most "
    "exact_search_max_count items), and the search-during-upsert section is skipped (its "
    "upserted half is one batch)",
    "tower_like": "--n items and the queries drawn from Gaussians with the mean and covariance "
    "of the item and user towers' own vectors (a pair trained in the run for --epochs): the "
    "towers' geometry at a catalogue's size, where the tower set has 1,682 items; the towers' "
    "dimension (--dim does not apply)",
}


def make_data(p: Params) -> Data:
    """The data set ``p.data``, a uniform ``bucket`` attribute and the exact answers."""
    if p.data == "clusters":
        return clusters_data(p)
    if p.data == "uniform":
        vectors, queries = uniform_data(p.n, p.dim, p.queries, p.seed)
    elif p.data == "tower":
        vectors, queries = tower_data(p.epochs, p.queries, p.seed)
    elif p.data == "tower_like":
        vectors, queries = tower_like(p.n, p.queries, p.epochs, p.seed)
    else:
        raise ValueError(f"unknown data set {p.data!r}")
    buckets = np.random.default_rng([p.seed, 1]).integers(0, BUCKETS, len(vectors))
    exact = exact_knn(vectors, queries, max(p.ks))
    return Data(vectors, queries, buckets, exact)


def clusters_data(p: Params) -> Data:
    """A Gaussian mixture on the unit sphere: ``clusters`` random centres, each point its centre
    plus isotropic noise of total norm about ``spread``, normalised. Real embeddings cluster;
    uniform random vectors (``--spread`` large) are a worst case for HNSW."""
    rng = np.random.default_rng(p.seed)
    clusters = p.clusters or max(1, p.n // 100)
    centres = unit(rng.standard_normal((clusters, p.dim), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        which = rng.integers(0, clusters, m)
        noise = rng.standard_normal((m, p.dim), dtype=np.float32)
        return unit(centres[which] + noise * np.float32(p.spread / math.sqrt(p.dim)))

    vectors = draw(p.n)
    queries = draw(p.queries)
    buckets = rng.integers(0, BUCKETS, p.n)
    return Data(vectors, queries, buckets, exact_knn(vectors, queries, max(p.ks)))


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

"""Helpers of the ANN tests (and of the query node's, which search too): numpy data, exact
neighbours, recall, a small index."""

from __future__ import annotations

import numpy as np

from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.query_api import Metric


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def random_codes(n: int, bits: int, seed: int = 0) -> np.ndarray:
    """``n`` binary codes of ``bits`` bits as 0/1 float32: the signs of one fixed random
    projection (SimHash) of 16-d gaussian vectors, so that Hamming neighbours follow angles, as
    a binary hash's codes do. Uniform random bits would be the hard case uniform vectors are
    (README: recall@10 0.67 at the node's default ef on 64-d), a test of HNSW, not a backend."""
    projection = np.random.default_rng(1_000_003).standard_normal((16, bits))
    return (random_vectors(n, 16, seed) @ projection > 0).astype(np.float32)


def distance_keys(data: np.ndarray, queries: np.ndarray, metric: Metric) -> np.ndarray:
    """Per query and row, a key that orders rows nearest first: the squared distance for l2
    and hamming (for 0/1 vectors the number of differing bits), the negated similarity else."""
    if metric.smaller_is_nearer:
        return (queries**2).sum(1)[:, None] - 2 * queries @ data.T + (data**2).sum(1)[None]
    if metric is Metric.IP:
        return -(queries @ data.T)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    return -(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> np.ndarray:
    """Row numbers of the true k nearest, nearest first; the ground truth for recall."""
    return np.argsort(distance_keys(data, queries, metric), axis=1, kind="stable")[:, :k]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def recall_with_ties(found: list[list[int]], keys: np.ndarray, k: int) -> float:
    """recall@k of ``found`` (row numbers, per query) by ``distance_keys``: a row as near as
    the k-th true neighbour counts as one of them. Hamming distances are small integers, so
    many rows tie at the k-th and which of them a search returns is arbitrary; with float
    distances (no ties) this is ``recall``."""
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1]
    hits = sum(int(np.count_nonzero(keys[i, rows] <= kth[i])) for i, rows in enumerate(found))
    return hits / (k * len(found))


def new_index(
    dim: int = 8,
    metric: Metric | str = Metric.L2,
    settings: QueryNodeSettings | None = None,
    **spec: object,
) -> VectorIndex:
    return VectorIndex(
        IndexSpec(name="items", model_version=1, dim=dim, metric=Metric(metric), **spec),
        settings or QueryNodeSettings(),
    )

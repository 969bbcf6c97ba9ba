"""Helpers of the ANN tests (and of the query node's, which search too): numpy data, exact
neighbours, recall, a small index."""

from __future__ import annotations

import numpy as np

from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.query_api import Metric


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int, metric: Metric) -> np.ndarray:
    """Row numbers of the true k nearest, nearest first; the ground truth for recall."""
    if metric is Metric.L2:
        keys = (queries**2).sum(1)[:, None] - 2 * queries @ data.T + (data**2).sum(1)[None]
    elif metric is Metric.IP:
        keys = -(queries @ data.T)
    else:
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        keys = -(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    return np.argsort(keys, axis=1, kind="stable")[:, :k]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


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

"""What a run is: its constants, the command line's choices (``Params``) and the node's ef."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nrtrec.core.settings import QueryNodeSettings

INDEX = "bench"
MODEL_VERSION = 1
KS = (10, 100)
# Share of items a filter keeps; the `bucket` attribute is uniform over 0..99.
SELECTIVITIES = (0.5, 0.1, 0.01)
BUCKETS = 100
RECALL_TARGET = 0.95
HTTP_OVERHEAD_TARGET = 2.0
# The DESIGN target on the HTTP overhead is stated for indexes of at least this many vectors.
HTTP_OVERHEAD_MIN_N = 100_000
# DESIGN: an item delta is searchable on the query node within 1 s of its produce, at p95.
FRESHNESS_TARGET_MS = 1000.0
# An item still not found this long after its produce counts as not found.
FRESHNESS_DEADLINE_S = 10.0
# Each pending item is searched again this long after its previous search started.
FRESHNESS_POLL_SPACING_S = 0.002
# Threads searching pending items (one keep-alive connection each): the most searches in flight.
FRESHNESS_POLLERS = 2
# The producer's batching delay (librdkafka's default, stated so the JSON records it).
FRESHNESS_LINGER_MS = 5
# Paths of the unfiltered latency loop, in the order they are plotted.
SEARCH_PATHS = ("hnswlib", "in_process", "http", "healthz")
FILTER_PATHS = ("hnswlib_filter", "in_process", "http")
LABELS = {
    "hnswlib": "hnswlib\nin-process",
    "hnswlib_filter": "hnswlib\n+ filter callback",
    "in_process": "VectorIndex\nin-process",
    "http": "query node\nHTTP search",
    "healthz": "query node\nHTTP /healthz",
}


@dataclass(frozen=True)
class Params:
    n: int
    dim: int
    queries: int
    filter_queries: int
    clusters: int
    spread: float
    seed: int
    M: int
    ef_construction: int
    batch: int
    warmup: int
    ks: tuple[int, ...] = KS
    selectivities: tuple[float, ...] = SELECTIVITIES
    metric: str = "cosine"
    freshness: bool = True
    freshness_rate: float = 50.0
    freshness_seconds: float = 20.0
    freshness_preload: int = 10_000


def node_ef(settings: QueryNodeSettings, k: int) -> int:
    """The ef the node searches with when a request gives none (as ``VectorIndex.search``)."""
    return min(settings.max_ef, max(k, settings.ef_search, math.ceil(settings.ef_per_k * k)))

"""What a run is: its constants, the command line's choices (``Params``) and the node's ef."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from nrtrec.core.settings import QueryNodeSettings

INDEX = "bench"
# The index the search-during-upsert section writes to while it searches it (same node).
LIVE_INDEX = "bench-live"
# The data sets (``--data``): a Gaussian mixture, uniform on the sphere, the item tower's own.
DATASETS = ("clusters", "uniform", "tower", "tower_like")
MODEL_VERSION = 1
KS = (10, 100)
# Share of items a filter keeps; the `bucket` attribute is uniform over 0..99.
SELECTIVITIES = (0.5, 0.1, 0.01)
BUCKETS = 100
RECALL_TARGET = 0.95
HTTP_OVERHEAD_TARGET = 2.0
# The DESIGN target on the HTTP overhead is stated for indexes of at least this many vectors.
HTTP_OVERHEAD_MIN_N = 100_000
# Delta -> node, the path and its bound: a record produced to item-deltas is searchable on that
# node within 1 s, at p95. A part of the pipeline only, not the end-to-end target (a listing
# produced -> searchable through the item job, Triton and the gateway: bench.streaming).
DELTA_TO_NODE = "delta → node (produce to item-deltas → searchable on the node)"
FRESHNESS_TARGET_MS = 1000.0
# An item still not found this long after its produce counts as not found.
FRESHNESS_DEADLINE_S = 10.0
# Each pending item is searched again this long after its previous search started.
FRESHNESS_POLL_SPACING_S = 0.002
# Threads searching pending items (one keep-alive connection each): the most searches in flight.
FRESHNESS_POLLERS = 2
# The producer's batching delay (librdkafka's default, stated so the JSON records it).
FRESHNESS_LINGER_MS = 5
# The ef sweep (--efs; below k the node and hnswlib search with ef = k) and the recalls at which
# the paths are compared, each at its own smallest ef that reaches it.
SWEEP_EFS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
MATCHED_RECALLS = (0.90, 0.95, 0.99)
SWEEP_PATHS = ("hnswlib", "in_process", "http", "healthz", "floor")
# The target: search over HTTP <= 1.5x in-process hnswlib (p95) at matched recall.
MATCHED_RATIO_TARGET = 1.5
# The target: upserts over HTTP (batches of 1,000) >= 0.8x hnswlib add_items.
UPSERT_RATIO_TARGET = 0.8
# The bench's reading of "a search does not wait for a whole batch": p99 of a search's service
# time during the bulk upsert under this share of the median time of the batches beside it.
# A search that queues behind a write lock held for the batch reads about 0.6 here (the rest of
# the batch time is the client's encoding and the transfer); one that does not, well under 0.1.
STALL_SHARE_MAX = 0.25
# Paths of the unfiltered latency loop, in the order they are plotted.
SEARCH_PATHS = ("hnswlib", "in_process", "http", "healthz")
FILTER_PATHS = ("hnswlib_filter", "in_process", "http")
LABELS = {
    "hnswlib": "hnswlib\nin-process",
    "hnswlib_filter": "hnswlib\n+ filter callback",
    "in_process": "VectorIndex\nin-process",
    "http": "query node\nHTTP search",
    "healthz": "query node\nHTTP /healthz",
    "floor": "empty ASGI app\n(same server, same body)",
}


@dataclass(frozen=True)
class Params:
    n: int
    dim: int
    queries: int
    filter_queries: int
    clusters: int | None
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
    data: str = "clusters"
    epochs: int = 1
    # hnswlib add_items num_threads and the node's (and VectorIndex's) insert_threads alike.
    insert_threads: int = -1
    efs: tuple[int, ...] = SWEEP_EFS
    sweep_queries: int = 500
    # Search during upsert: searches per second (open loop, a process and connection of its
    # own) and the rounds of (upserts alone, upserts + searches, searches alone).
    during_rate: float = 100.0
    during_rounds: int = 5


def resolved_threads(threads: int) -> int:
    """What hnswlib runs with for ``num_threads``: -1 (or 0) is every online core."""
    return threads if threads > 0 else os.cpu_count() or 1


def output_name(data: str) -> str:
    """The results' file stem: ``query_node`` for the default clusters (README cites it),
    ``query_node_<data>`` for the others."""
    return "query_node" if data == "clusters" else f"query_node_{data}"


def node_ef(settings: QueryNodeSettings, k: int) -> int:
    """The ef the node searches with when a request gives none (as ``VectorIndex.search``)."""
    return min(settings.max_ef, max(k, settings.ef_search, math.ceil(settings.ef_per_k * k)))

"""In-memory HNSW query nodes and the gateway that fans searches out over shards.

In-process use::

    node = QueryNode(Settings())
    node.create_index("items", model_version=1, dim=384, metric="cosine")
    node.upsert("items", ["a"], [vector], [{"category": "toys"}])
    index, result = node.search("items", vector, k=10, filter={"category": "toys"})

Over HTTP: ``create_app(settings)`` (FastAPI), or ``nrtrec query-node``.
"""

from nrtrec.query_node.errors import (
    IndexExists,
    IndexNotFound,
    InvalidFilter,
    InvalidSpec,
    InvalidVector,
    OutOfRange,
    QueryNodeError,
    SnapshotError,
)
from nrtrec.query_node.filters import Condition, Filter, Op, parse_filter
from nrtrec.query_node.index import Hit, IndexSpec, SearchResult, Strategy, VectorIndex
from nrtrec.query_node.node import QueryNode
from nrtrec.query_node.registry import IndexKey, IndexRegistry
from nrtrec.query_node.snapshots import Snapshot, SnapshotStore
from nrtrec.schemas.query_api import Metric

__all__ = [
    "Condition",
    "Filter",
    "Hit",
    "IndexExists",
    "IndexKey",
    "IndexNotFound",
    "IndexRegistry",
    "IndexSpec",
    "InvalidFilter",
    "InvalidSpec",
    "InvalidVector",
    "Metric",
    "Op",
    "OutOfRange",
    "QueryNode",
    "QueryNodeError",
    "SearchResult",
    "Snapshot",
    "SnapshotError",
    "SnapshotStore",
    "Strategy",
    "VectorIndex",
    "create_app",
    "parse_filter",
]


def __getattr__(name: str):
    # The HTTP layer pulls in FastAPI; in-process users (a Flink job, the bulk loader) need not.
    if name == "create_app":
        from nrtrec.query_node.http import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

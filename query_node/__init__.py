"""The query node (in-memory ANN indexes behind the query API) and the gateway over its shards.

Other packages use this one through its typed client, ``nrtrec.query_node.client``
(``QueryClient``, ``BlockingQueryClient``); the command line starts the services with
``create_app`` (a node) and ``create_gateway_app`` (the gateway). In-process::

    node = QueryNode(Settings())
    node.create_index("items", model_version=1, dim=64, metric="cosine")
    node.upsert("items", ["a"], [vector], [{"category": "toys"}])
    index, result = node.search("items", vector, k=10, filter={"category": "toys"})

The names below other than the client load lazily: a client does not pull in the node's
indexes or the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nrtrec.query_node.client import (
    BlockingQueryClient,
    NotFound,
    QueryApiError,
    QueryClient,
    Refused,
    Unavailable,
)
from nrtrec.query_node.errors import IndexExists, IndexNotFound, QueryNodeError

if TYPE_CHECKING:
    from nrtrec.query_node.gateway import create_gateway_app
    from nrtrec.query_node.http import create_app
    from nrtrec.query_node.node import QueryNode
    from nrtrec.query_node.registry import IndexRegistry

__all__ = [
    "BlockingQueryClient",
    "IndexExists",
    "IndexNotFound",
    "IndexRegistry",
    "NotFound",
    "QueryApiError",
    "QueryClient",
    "QueryNode",
    "QueryNodeError",
    "Refused",
    "Unavailable",
    "create_app",
    "create_gateway_app",
]

_LAZY = {
    "QueryNode": "nrtrec.query_node.node",
    "IndexRegistry": "nrtrec.query_node.registry",
    "create_app": "nrtrec.query_node.http",
    "create_gateway_app": "nrtrec.query_node.gateway",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

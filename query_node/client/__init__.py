"""The one client of the query-node API (DESIGN.md), in two kinds with the same reads:

- ``QueryClient`` (async) and ``BlockingQueryClient``: one base URL, a node or the gateway;
- ``ShardedQueryClient`` (async, reads only): the shards themselves, the fan-out in-process.

``QueryReader`` is what both kinds answer, for code that reads and need not know which;
``Attempt`` is one failed call to a replica, as a ``ShardedQueryClient`` reports it to metrics.
"""

from nrtrec.query_node.client.http import (
    BlockingQueryClient,
    NotFound,
    QueryApiError,
    QueryClient,
    Refused,
    Unavailable,
)
from nrtrec.query_node.client.reader import QueryReader
from nrtrec.query_node.client.sharded import ShardedQueryClient
from nrtrec.query_node.fanout import Attempt

__all__ = [
    "Attempt",
    "BlockingQueryClient",
    "NotFound",
    "QueryApiError",
    "QueryClient",
    "QueryReader",
    "Refused",
    "ShardedQueryClient",
    "Unavailable",
]

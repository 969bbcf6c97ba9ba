"""The gateway: the query-node HTTP API over sharded, replicated query nodes.

``create_gateway_app(settings)`` (FastAPI) or ``nrtrec gateway``. Items are placed on shards by
``nrtrec.schemas.partitioning`` (Kafka's partitioner over item-deltas' partitions); the shard
map and the replicas' URLs come from ``settings.gateway``.
"""

from nrtrec.query_node.gateway.app import create_gateway_app
from nrtrec.query_node.gateway.merge import merge_hits, merge_listings
from nrtrec.query_node.gateway.service import Gateway
from nrtrec.query_node.gateway.shards import (
    GatewayError,
    Replica,
    Shard,
    ShardFailed,
    ShardRejected,
    ShardsFailed,
)

__all__ = [
    "Gateway",
    "GatewayError",
    "Replica",
    "Shard",
    "ShardFailed",
    "ShardRejected",
    "ShardsFailed",
    "create_gateway_app",
    "merge_hits",
    "merge_listings",
]

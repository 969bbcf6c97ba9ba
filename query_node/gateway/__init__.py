"""The gateway: the query-node HTTP API over sharded, replicated query nodes.

``create_gateway_app(settings)`` (FastAPI) or ``nrtrec gateway``. The fan-out itself (shards,
replicas, health, merging) is ``nrtrec.query_node.fanout``; the gateway adds the writes. The
shard map and the replicas' URLs come from ``settings.gateway``.
"""

from nrtrec.query_node.gateway.app import create_gateway_app
from nrtrec.query_node.gateway.service import Gateway

__all__ = ["Gateway", "create_gateway_app"]

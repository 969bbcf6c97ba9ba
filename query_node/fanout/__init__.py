"""The fan-out over sharded, replicated query nodes, as a library: which replica of which shard
to ask, failover within a deadline, health probes, and merging the shards' answers.

The gateway service (``query_node.gateway``) is a ``FanOut`` plus the writes; other services
embed one through ``nrtrec.query_node.client.ShardedQueryClient``.
"""

from nrtrec.query_node.fanout.errors import (
    Answer,
    Attempt,
    FanOutError,
    MetricUnknown,
    ShardFailed,
    ShardRejected,
    ShardsFailed,
)
from nrtrec.query_node.fanout.merge import merge_hits, merge_listings
from nrtrec.query_node.fanout.reads import FanOut
from nrtrec.query_node.fanout.shards import Replica, Shard, Upstream

__all__ = [
    "Answer",
    "Attempt",
    "FanOut",
    "FanOutError",
    "MetricUnknown",
    "Replica",
    "Shard",
    "ShardFailed",
    "ShardRejected",
    "ShardsFailed",
    "Upstream",
    "merge_hits",
    "merge_listings",
]

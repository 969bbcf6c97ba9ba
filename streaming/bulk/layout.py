"""Where a bulk run's shards are: which ``item-deltas`` partitions each owns (so which items it
holds) and the query nodes that serve it, as the settings name them."""

from __future__ import annotations

from dataclasses import dataclass

from nrtrec.core.settings import Settings
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.streaming.errors import BulkError


@dataclass(frozen=True)
class ShardLayout:
    """Which shard owns which ``item-deltas`` partitions, and the query nodes of each shard."""

    shard_map: ShardMap
    urls: list[list[str]]


def shard_layout(settings: Settings) -> ShardLayout:
    """The gateway's shards when configured (``gateway.shards``), else the local runner's
    query nodes; either way the partitions each shard owns are those its nodes consume."""
    try:
        shard_map = settings.shard_map()
    except ValueError as e:
        raise BulkError(f"the shard map in settings is not usable: {e}") from None
    return ShardLayout(shard_map, settings.shard_urls())

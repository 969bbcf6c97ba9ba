"""Step 5 of a bulk run: each shard's snapshot swapped into every query node of that shard."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nrtrec.core.settings import Settings
from nrtrec.query_node.client import BlockingQueryClient, QueryApiError
from nrtrec.schemas.query_api import LoadRequest
from nrtrec.streaming.bulk.layout import shard_layout
from nrtrec.streaming.bulk.manifest import BulkManifest
from nrtrec.streaming.errors import BulkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedShard:
    shard: int
    url: str
    count: int
    offsets: dict[str, int]


def load_snapshots(
    settings: Settings,
    manifest: BulkManifest,
    urls: list[list[str]] | None = None,
) -> list[LoadedShard]:
    """Each shard's snapshot swapped in on every query node of that shard.

    ``urls``: per shard, its nodes' base URLs (None: ``shard_layout(settings)``). The snapshot
    paths must be readable by the nodes (this machine, or a shared disk). Every node is tried;
    then a ``BulkError`` names each one that did not take its snapshot.
    """
    if urls is None:
        urls = shard_layout(settings).urls
    if len(urls) != len(manifest.shards):
        raise BulkError(
            f"the snapshots are for {len(manifest.shards)} shards but {len(urls)} are configured"
        )
    loaded, failures = [], []
    timeout = settings.streaming.bulk_load_timeout_s
    for shard in manifest.shards:
        for url in urls[shard.shard]:
            # One try: a load reads and swaps a whole index, and the caller sees what failed.
            with BlockingQueryClient(
                url, token=settings.token, timeout_s=timeout, retries=0
            ) as client:
                try:
                    result = client.load(manifest.index_name, LoadRequest(path=shard.snapshot_path))
                except QueryApiError as e:
                    failures.append(f"shard {shard.shard} at {url}: {e}")
                    continue
            for index in result.loaded:
                loaded.append(LoadedShard(shard.shard, url, index.count, index.offsets))
                log.info("bulk: %s serves shard %d (%d items)", url, shard.shard, shard.count)
    if failures:
        raise BulkError("snapshots not loaded: " + "; ".join(failures))
    return loaded

"""Which model versions of the catalogue index are live, from the gateway's listing.

A version is live when the gateway lists ``(index_name, version)`` as serving, with at least
one item: a version whose index was just created and is still empty would answer nothing, and
one still building (a rollout filling it, ``CreateIndexRequest.serving``) would answer from a
part of the catalogue. The listing is
cached ``versions_ttl_s``; one refresh at a time, the others use the value they find. When a
refresh fails the last listing is kept (and said to be stale), so a gateway blip does not turn
every answer into popular items.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio

from nrtrec.query_node.client import QueryApiError, QueryReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveIndex:
    model_version: int
    dim: int
    metric: str
    count: int


@dataclass(frozen=True)
class Listing:
    by_version: dict[int, LiveIndex]
    fetched_at: float
    # Why the listing is older than the TTL (the last refresh failed), else None.
    stale: str | None = None

    def newest_first(self) -> list[LiveIndex]:
        return [self.by_version[v] for v in sorted(self.by_version, reverse=True)]


class LiveVersions:
    def __init__(self, gateway: QueryReader, index_name: str, ttl_s: float):
        self._gateway = gateway
        self._index = index_name
        self._ttl_s = ttl_s
        self._listing: Listing | None = None
        self._lock = anyio.Lock()

    @property
    def last(self) -> Listing | None:
        return self._listing

    def invalidate(self) -> None:
        """Forget the listing (a search found a listed version gone)."""
        if self._listing is not None:
            self._listing = Listing(self._listing.by_version, 0.0, self._listing.stale)

    async def get(self, timeout_s: float) -> Listing:
        """The live versions; raises ``QueryApiError`` only when there never was a listing."""
        listing = self._listing
        if listing is not None and time.monotonic() - listing.fetched_at < self._ttl_s:
            return listing
        if self._lock.locked() and listing is not None:
            # Someone is refreshing; this request uses what is there.
            return listing
        async with self._lock:
            listing = self._listing
            if listing is not None and time.monotonic() - listing.fetched_at < self._ttl_s:
                return listing
            try:
                entries = await self._gateway.indexes(timeout_s=timeout_s)
            except QueryApiError as e:
                if listing is None:
                    raise
                log.warning("index listing failed; using the one from before: %s", e)
                # Retried after another TTL, not on every request meanwhile.
                self._listing = Listing(listing.by_version, time.monotonic(), f"{e}")
                return self._listing
            live = {
                e.model_version: LiveIndex(e.model_version, e.dim, e.metric.value, e.count)
                for e in entries
                if e.name == self._index and e.serving and e.count > 0
            }
            self._listing = Listing(live, time.monotonic())
            return self._listing

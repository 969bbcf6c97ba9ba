"""The fresh listings, kept ready in the app: the candidates the fresh boost can lift.

The towers rank a new listing far below the items they were trained on, so a search for a
user's vector rarely returns one, and a boost can only lift what is among the candidates. A
second search per request would find them, at twice the query traffic (in a smoke run of the
serving benchmark it saturated this 2-core machine at 150 requests/s). So a
background loop lists every live version's fresh listings every ``app.fresh_refresh_s`` (a
search filtered on ``listed_at``, then their vectors), and each request scores that small pool
in process (:mod:`.ranking`), as it scores the popular pool.

When more than ``app.fresh_pool`` listings are fresh, the pool holds the newest: the window is
halved until they fit. A listing joins the pool at most ``fresh_refresh_s`` after it is
indexed, and a deleted one can stay in it that long (as in the popular pool).
"""

from __future__ import annotations

import logging
import time

import anyio
import numpy as np

from nrtrec.core.settings import Settings
from nrtrec.query_node.client import NotFound, QueryApiError, QueryReader
from nrtrec.recommender_app.fresh import listed_within
from nrtrec.recommender_app.popular import PoolVectors
from nrtrec.recommender_app.versions import LiveIndex, LiveVersions
from nrtrec.schemas.query_api import Metric, SearchRequest

log = logging.getLogger(__name__)

# Narrowing the window stops here: listings fresher than this all fit, or the pool takes any.
MIN_WINDOW_S = 1.0


class FreshListings:
    def __init__(self, settings: Settings, gateway: QueryReader, versions: LiveVersions):
        self._app = settings.app
        self._gateway = gateway
        self._versions = versions
        self._max_k = settings.query_node.max_k  # what one search may ask of a node
        self._pools: dict[int, PoolVectors] = {}

    @property
    def current(self) -> dict[int, PoolVectors]:
        """Per live version (similarity metrics only), its fresh listings at the last refresh."""
        return self._pools

    async def refresh(self) -> None:
        timeout_s = self._app.popular_refresh_timeout_s
        try:
            listing = await self._versions.get(timeout_s)
        except QueryApiError as e:
            log.info("fresh listings: no listing of versions this time: %s", e)
            return
        pools = {}
        for live in listing.newest_first():
            if Metric(live.metric).smaller_is_nearer:
                continue  # the boost adds to similarities only
            try:
                pool = await self._pool(live, timeout_s)
            except NotFound:
                self._versions.invalidate()
                continue
            except QueryApiError as e:
                # No pool at this version until a refresh works: never vectors it may not hold.
                log.info("fresh listings: none at v%d this time: %s", live.model_version, e)
                continue
            if pool is not None:
                pools[live.model_version] = pool
        self._pools = pools

    async def _pool(self, live: LiveIndex, timeout_s: float) -> PoolVectors | None:
        cap, window = self._app.fresh_pool, self._app.fresh_listing_s
        # Any query vector will do: the search only lists what the filter lets through.
        probe = [1.0] + [0.0] * (live.dim - 1)
        while True:
            request = SearchRequest(
                vector=probe, k=min(cap + 1, self._max_k), model_version=live.model_version,
                filter=listed_within(window, time.time()).to_json(),
            )  # fmt: skip
            answer = await self._gateway.search(self._app.index_name, request, timeout_s=timeout_s)
            if len(answer.items) <= cap or window <= MIN_WINDOW_S:
                break
            window /= 2  # more are fresh than the pool holds: keep the newest
        ids = [hit.id for hit in answer.items[:cap]]
        if not ids:
            return None
        found = await self._gateway.items(
            self._app.index_name, ids, live.model_version, timeout_s=timeout_s
        )
        if not found.items:
            return None
        return PoolVectors(
            [item.id for item in found.items],
            np.array([item.vector for item in found.items], np.float32),
            np.zeros(len(found.items), np.float64),  # no prior of their own
            [item.attributes for item in found.items],
        )

    async def run(self) -> None:
        """Refresh forever (the app's lifespan cancels it)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("fresh listings refresh failed")
            await anyio.sleep(self._app.fresh_refresh_s)

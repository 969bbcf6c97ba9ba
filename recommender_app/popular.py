"""The non-personalized fallback: the most viewed items, kept ready in the app.

A background loop reads the store's ``popular(popular_pool)`` every ``popular_refresh_s`` and
looks up the items at every live version: their attributes (titles, and what filters test) at
the newest, and their vectors at each, which the popularity prior (:mod:`.prior`) scores a
returning user against. The answer to a request comes from that copy, so it is there when the
store is slow or down: it is then as old as the last refresh that worked, and the response says
so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import anyio
import numpy as np

from nrtrec.core.settings import Settings
from nrtrec.query_node.client import NotFound, QueryApiError, QueryReader
from nrtrec.recommender_app.prior import prior
from nrtrec.recommender_app.store import AsyncStore
from nrtrec.recommender_app.versions import LiveVersions
from nrtrec.schemas.query_api import StoredItem
from nrtrec.user_store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopularItem:
    id: str
    views: float
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class PoolVectors:
    """The popular items found in one version's index: their vectors and priors."""

    ids: list[str]
    vectors: np.ndarray  # [n, dim] float32, as stored (unit length for cosine)
    priors: np.ndarray  # [n], prior.prior of their views
    attributes: list[dict[str, Any]]  # at this version (what filters test)

    # Worked out once per refresh, not once per request (ranking.py scores the pool each time).
    @cached_property
    def float64(self) -> np.ndarray:
        return self.vectors.astype(np.float64)

    @cached_property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.float64, axis=1)


@dataclass(frozen=True)
class PopularList:
    items: list[PopularItem]
    # When the store last answered (monotonic), and why the last refresh failed, if it did.
    refreshed_at: float | None
    error: str | None
    by_version: dict[int, PoolVectors] = field(default_factory=dict)

    def reasons(self) -> list[str]:
        if self.error is None:
            return []
        if self.refreshed_at is None:
            return [f"store_unavailable: no popular items yet ({self.error})"]
        age = time.monotonic() - self.refreshed_at
        return [f"store_unavailable: popular items as of {age:.0f} s ago ({self.error})"]


class PopularItems:
    def __init__(
        self, settings: Settings, store: AsyncStore, gateway: QueryReader, versions: LiveVersions
    ):
        self._app = settings.app
        self._store = store
        self._gateway = gateway
        self._versions = versions
        self._list = PopularList([], None, None)
        self._lock = anyio.Lock()

    @property
    def current(self) -> PopularList:
        return self._list

    async def get(self, timeout_s: float) -> PopularList:
        """The cached list; read from the store first when there is none yet (start-up).

        A request that comes while the first refresh is under way waits for it (within its own
        budget), so an answer before the first list says whether the store failed.
        """
        if self._list.refreshed_at is None:
            with anyio.move_on_after(timeout_s):
                await self.refresh(timeout_s)
        return self._list

    async def refresh(self, timeout_s: float | None = None) -> None:
        timeout_s = self._app.popular_refresh_timeout_s if timeout_s is None else timeout_s
        async with self._lock:
            try:
                ranked = await self._store.popular(self._app.popular_pool, timeout_s)
            except StoreError as e:
                if self._list.error is None:
                    log.warning("popular items: the store did not answer: %s", e)
                self._list = PopularList(
                    self._list.items, self._list.refreshed_at, str(e), self._list.by_version
                )
                return
            known = {item.id: item.attributes for item in self._list.items}
            found = await self._lookup([item_id for item_id, _ in ranked], timeout_s)
            newest = found[max(found)] if found else {}
            items = [
                PopularItem(
                    item_id,
                    views,
                    newest[item_id].attributes if item_id in newest else known.get(item_id),
                )
                for item_id, views in ranked
            ]
            priors = dict(zip((i for i, _ in ranked), prior([v for _, v in ranked]), strict=True))
            by_version = {
                version: PoolVectors(
                    list(stored),
                    np.array([s.vector for s in stored.values()], np.float32),
                    np.array([priors[i] for i in stored], np.float64),
                    [s.attributes for s in stored.values()],
                )
                for version, stored in found.items()
                if stored
            }
            self._list = PopularList(items, time.monotonic(), None, by_version)

    async def _lookup(self, ids: list[str], timeout_s: float) -> dict[int, dict[str, StoredItem]]:
        """Per live version, the items of ``ids`` its index holds. A version whose lookup
        failed is left out: no pool there until a refresh that works, so the prior is never
        scored against vectors (or items) its index may no longer hold."""
        if not ids:
            return {}
        try:
            listing = await self._versions.get(timeout_s)
        except QueryApiError as e:
            log.info("popular items: no attributes or vectors this time: %s", e)
            return {}
        out = {}
        for live in listing.newest_first():
            try:
                found = await self._gateway.items(
                    self._app.index_name, ids, live.model_version, timeout_s=timeout_s
                )
            except NotFound:
                self._versions.invalidate()  # dropped since the listing: list again next time
                continue
            except QueryApiError as e:
                log.info("popular items: no vectors at v%d this time: %s", live.model_version, e)
                continue
            out[live.model_version] = {item.id: item for item in found.items}
        return out

    async def run(self) -> None:
        """Refresh forever (the app's lifespan cancels it)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("popular items refresh failed")
            await anyio.sleep(self._app.popular_refresh_s)

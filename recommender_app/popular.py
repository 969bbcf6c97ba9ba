"""The non-personalized fallback: the most viewed items, kept ready in the app.

A background loop reads the store's ``popular(popular_pool)`` every ``popular_refresh_s`` and
looks up the items' attributes (titles, and what filters test) at the newest live version. The
answer to a request comes from that copy, so it is there when the store is slow or down: it is
then as old as the last refresh that worked, and the response says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio

from nrtrec.core.settings import Settings
from nrtrec.query_node.client import QueryApiError, QueryReader
from nrtrec.recommender_app.store import AsyncStore
from nrtrec.recommender_app.versions import LiveVersions
from nrtrec.user_store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PopularItem:
    id: str
    views: float
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class PopularList:
    items: list[PopularItem]
    # When the store last answered (monotonic), and why the last refresh failed, if it did.
    refreshed_at: float | None
    error: str | None

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
                self._list = PopularList(self._list.items, self._list.refreshed_at, str(e))
                return
            known = {item.id: item.attributes for item in self._list.items}
            attributes = await self._attributes([item_id for item_id, _ in ranked], timeout_s)
            items = [
                PopularItem(item_id, views, attributes.get(item_id, known.get(item_id)))
                for item_id, views in ranked
            ]
            self._list = PopularList(items, time.monotonic(), None)

    async def _attributes(self, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        try:
            listing = await self._versions.get(timeout_s)
            live = listing.newest_first()
            if not live:
                return {}
            found = await self._gateway.items(
                self._app.index_name, ids, live[0].model_version, timeout_s=timeout_s
            )
        except QueryApiError as e:
            log.info("popular items: no attributes this time: %s", e)
            return {}
        return {item.id: item.attributes for item in found.items}

    async def run(self) -> None:
        """Refresh forever (the app's lifespan cancels it)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("popular items refresh failed")
            await anyio.sleep(self._app.popular_refresh_s)

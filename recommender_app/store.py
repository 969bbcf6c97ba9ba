"""The user-vector store from async code: each call in a worker thread, bounded by a timeout.

The store is synchronous (``nrtrec.user_store``). A call runs in a thread of its own limiter, so
a hung store can take at most ``app.store_threads`` threads and never the event loop or the
default pool; a call past its timeout is abandoned (its thread finishes on its own, bounded by
the store's own socket timeout) and reported as :class:`StoreUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from nrtrec.core.settings import Settings
from nrtrec.schemas import UserVectors
from nrtrec.user_store import StoreError, StoreUnavailable, UserVectorStore, open_store

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncStore:
    def __init__(self, settings: Settings, store: UserVectorStore | None = None):
        self._settings = settings
        self._store = store
        self._owned = store is None
        self._limiter = anyio.CapacityLimiter(settings.app.store_threads)

    async def _run(self, call: Callable[[UserVectorStore], T], what: str, timeout_s: float) -> T:
        try:
            with anyio.fail_after(timeout_s):
                store = self._store
                if store is None:
                    # Opening is lazy and retried on every call until it succeeds; a backend
                    # that connects eagerly (Couchbase) must not keep the app from starting.
                    store = await anyio.to_thread.run_sync(
                        open_store, self._settings, limiter=self._limiter, abandon_on_cancel=True
                    )
                    self._store = store
                return await anyio.to_thread.run_sync(
                    call, store, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise StoreUnavailable(f"{what}: no answer within {timeout_s * 1000:.0f} ms") from None
        except StoreError:
            raise
        except Exception as e:
            # A backend's bug or an unexpected client error: still the store failing.
            log.exception("user store: %s failed", what)
            raise StoreError(f"{what}: {type(e).__name__}: {e}") from None

    async def get(self, user_id: str, timeout_s: float) -> UserVectors | None:
        return await self._run(lambda s: s.get(user_id), f"get user {user_id!r}", timeout_s)

    async def popular(self, k: int, timeout_s: float) -> list[tuple[str, float]]:
        return await self._run(lambda s: s.popular(k), "popular items", timeout_s)

    async def ping(self, timeout_s: float) -> None:
        await self._run(lambda s: s.ping(), "ping", timeout_s)

    def close(self) -> None:
        if self._owned and self._store is not None:
            self._store.close()
            self._store = None

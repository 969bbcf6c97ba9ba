"""The abstract user-vector store every backend implements."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence

from nrtrec.core.settings import Settings
from nrtrec.schemas import UserVector, UserVectors


class UserVectorStore(ABC):
    """User vectors by user id, the last few model versions each, plus item views per day.

    Writes are idempotent so that a streaming job replaying from a checkpoint cannot make a
    user's record go back in time: a vector older (``source_ts``) than the stored one of the
    same version is ignored. Every call is bounded by ``settings.user_store.timeout_s``; a
    backend that does not answer raises :class:`StoreUnavailable`.
    """

    @abstractmethod
    def put(
        self,
        vector: UserVector,
        *,
        recent_items: Sequence[str] | None = None,
        create: bool = True,
    ) -> bool:
        """Merge ``vector`` into its user's record, keeping the newest ``keep_versions``.

        ``recent_items`` (newest first) replaces the stored list when given. ``create=False``
        writes only into an existing record (a rollout's pass must not bring back a user
        deleted since it was listed). Returns False when the write was stale, or the user
        unknown with ``create=False``, and changed nothing.
        """

    @abstractmethod
    def get(self, user_id: str) -> UserVectors | None:
        """The user's record, newest version first, or None for an unknown user."""

    @abstractmethod
    def delete(self, user_id: str) -> None:
        """Forget the user (no error when unknown)."""

    @abstractmethod
    def drop_version(self, user_id: str, model_version: int) -> bool:
        """Remove the user's ``model_version`` vector, only when the record holds a newer
        version; True when one was removed. The recent items and the expiry stay."""

    @abstractmethod
    def user_ids(self, batch: int = 500) -> Iterator[list[str]]:
        """Every user of this store (its ``key_prefix``), in lists of at most ``batch``.

        In no particular order. A user written during the iteration may or may not be listed;
        one whose record expired may still be (callers ``get`` each and skip None); Redis's
        SCAN may, rarely, list a user twice (callers' work per user is idempotent)."""

    @abstractmethod
    def add_views(self, counts: Mapping[str, int], *, day: int | None = None) -> None:
        """Add item view counts to ``day``'s, which :meth:`popular` sums over its window.

        ``day`` is the UTC day number of the views (``common.day_of(ts_ms)``); None is today
        by the wall clock. Views are kept per day so that popularity can follow a catalogue's
        drifting tastes: a day outside every window is dropped in time.
        """

    @abstractmethod
    def popular(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most viewed items over the ``popular_window_days`` days ending at the
        newest day that has views, most viewed first (ties in reverse id order), as
        (item_id, views); [] when there are none.

        The window ends at the newest view, not at the wall clock, so that a replayed old click
        stream still has popular items.
        """

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the backend answers."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> UserVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS: dict[str, str] = {
    "redis": "nrtrec.user_store.redis:RedisUserVectorStore",
    "couchbase": "nrtrec.user_store.couchbase:CouchbaseUserVectorStore",
}
"""Backend name -> ``module:class``: the interface names its backends, never imports them."""


def open_store(settings: Settings) -> UserVectorStore:
    """The backend that ``settings.user_store.backend`` names, connected."""
    backend = settings.user_store.backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown user store backend {backend!r} ({' or '.join(BACKENDS)})")
    module, _, name = BACKENDS[backend].partition(":")
    store_class: type[UserVectorStore] = getattr(importlib.import_module(module), name)
    return store_class(settings)

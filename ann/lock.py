"""The lock around one hnswlib index: searches share it, writes have it alone.

hnswlib documents ``knn_query`` as safe with other ``knn_query`` calls but not with
``add_items``, ``mark_deleted`` or ``resize_index``; it releases the GIL while it searches, so
shared searches really run in parallel. Its ``ef`` belongs to the index, not to a query, so
searches share the index only while they agree on ``ef``; a search that needs another ``ef``
waits for the current ones to finish, and new searches with the old ``ef`` queue behind it so
it is not starved. Waiting writers go before new readers for the same reason. A snapshot only
needs the index to stay still: ``frozen`` keeps writers out without pinning ``ef``, so a long
save does not hold up searches that want another ``ef``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nrtrec.ann.errors import IndexBusy


class IndexLock:
    def __init__(self, set_ef: Callable[[int], None]):
        self._set_ef = set_ef
        self._changed = threading.Condition()
        self._readers = 0
        self._frozen = 0
        self._writing = False
        self._writers_waiting = 0
        self._ef: int | None = None
        self._ef_waiting: Counter[int] = Counter()

    @contextmanager
    def read(self, ef: int | None = None, *, wait: bool = True) -> Iterator[None]:
        """Share the index with other readers; ``ef`` None means any ``ef`` will do. Without
        ``wait``, raises ``IndexBusy`` instead of waiting for a writer or another ``ef``."""
        with self._changed:
            if not wait and not self._may_read(ef):
                raise IndexBusy("the index is being written")
            if ef is not None:
                self._ef_waiting[ef] += 1
            try:
                self._changed.wait_for(lambda: self._may_read(ef))
            finally:
                if ef is not None:
                    self._ef_waiting[ef] -= 1
                    if not self._ef_waiting[ef]:
                        del self._ef_waiting[ef]
            if ef is not None and ef != self._ef:
                self._set_ef(ef)
                self._ef = ef
                # Readers that wanted this ef were waiting for the old ones to leave.
                self._changed.notify_all()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Keep writers out while reading our own state (not hnswlib's search)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._frozen += 1
        try:
            yield
        finally:
            with self._changed:
                self._frozen -= 1
                if not self._frozen:
                    self._changed.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            try:
                self._changed.wait_for(
                    lambda: not self._writing and not self._readers and not self._frozen
                )
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()

    def _may_read(self, ef: int | None) -> bool:
        if self._writing or self._writers_waiting:
            return False
        if ef is None or ef == self._ef:
            return not any(e != self._ef for e in self._ef_waiting)
        return not self._readers

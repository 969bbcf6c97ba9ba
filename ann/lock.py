"""The lock around one hnswlib index: searches share it, writes have it alone.

hnswlib documents ``knn_query`` as safe with other ``knn_query`` calls but not with
``add_items``, ``mark_deleted`` or ``resize_index``; it releases the GIL while it searches, so
shared searches really run in parallel. Its ``ef`` belongs to the index, not to a query, so
searches share the index only while they agree on ``ef``; a search that needs another ``ef``
waits for the current ones to finish, and new searches with the old ``ef`` queue behind it so
it is not starved. Waiting writers go before new readers for the same reason, and readers that
were waiting when a write ends go before the next write (a write of many chunks, one lock each,
lets the searches that queued behind a chunk run before the next one). A snapshot only
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
        # Readers waiting, by the number of writes that had ended when each came: those that
        # came before the last write ended go before the next write. The turn ends when they
        # are all in, so a stream of new searches cannot hold writes off for longer.
        self._writes_ended = 0
        self._waiting_since: Counter[int] = Counter()
        self._ef: int | None = None
        self._ef_waiting: Counter[int] = Counter()

    @contextmanager
    def read(self, ef: int | None = None, *, wait: bool = True) -> Iterator[None]:
        """Share the index with other readers; ``ef`` None means any ``ef`` will do. Without
        ``wait``, raises ``IndexBusy`` instead of waiting for a writer or another ``ef``."""
        with self._changed:
            # A reader let in at once leaves the queue's state as it found it: only one that
            # has to wait takes a place in it (the common case is a third cheaper for that).
            if not self._may_read(ef):
                if not wait:
                    raise IndexBusy("the index is being written")
                self._wait_to_read(ef)
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

    def _wait_to_read(self, ef: int | None) -> None:
        # Called holding self._changed.
        if ef is not None:
            self._ef_waiting[ef] += 1
        came = self._writes_ended
        self._waiting_since[came] += 1
        try:
            self._changed.wait_for(lambda: self._may_read(ef))
        finally:
            self._waiting_since[came] -= 1
            if not self._waiting_since[came]:
                del self._waiting_since[came]
                # The last reader that waited through a write is in: writers may go.
                self._changed.notify_all()
            if ef is not None:
                self._ef_waiting[ef] -= 1
                if not self._ef_waiting[ef]:
                    del self._ef_waiting[ef]

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
                    lambda: (
                        not self._writing
                        and not self._readers
                        and not self._frozen
                        and not self._readers_turn()
                    )
                )
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._writes_ended += 1
                self._changed.notify_all()

    def _readers_turn(self) -> bool:
        """Some reader has been waiting since before the last write ended."""
        return any(came < self._writes_ended for came in self._waiting_since)

    def _may_read(self, ef: int | None) -> bool:
        # While readers that waited through a write are still waiting, a waiting writer does
        # not keep readers out (not even new ones: one of another ef may have to go first for
        # those to get in); the turn ends when the last of them is in.
        if self._writing or (self._writers_waiting and not self._readers_turn()):
            return False
        if ef is None or ef == self._ef:
            return not any(e != self._ef for e in self._ef_waiting)
        return not self._readers

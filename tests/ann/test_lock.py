"""IndexLock: readers share while they agree on ef, writers are alone, nobody starves.

"Blocked" is checked by waiting a little for something that must not happen; a broken lock
makes these fail, a slow machine cannot.
"""

from __future__ import annotations

import threading

import pytest

from nrtrec.ann.errors import IndexBusy
from nrtrec.ann.lock import IndexLock

BLOCKED_S = 0.2
DONE_S = 10.0


class Probe:
    """A thread that takes the lock, says so, and holds it until released."""

    def __init__(self, lock: IndexLock, mode: str, ef: int | None = None):
        self.inside = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(lock, mode, ef), daemon=True)
        self.thread.start()

    def _run(self, lock: IndexLock, mode: str, ef: int | None) -> None:
        with lock.read(ef) if mode == "read" else lock.write():
            self.inside.set()
            self.release.wait(DONE_S)

    def leave(self) -> None:
        self.release.set()
        self.thread.join(DONE_S)
        assert not self.thread.is_alive()


def test_readers_with_the_same_ef_share_and_ef_is_set_once():
    applied: list[int] = []
    lock = IndexLock(applied.append)
    a, b, c = (Probe(lock, "read", 64) for _ in range(3))
    assert all(p.inside.wait(DONE_S) for p in (a, b, c))
    any_ef = Probe(lock, "read", None)
    assert any_ef.inside.wait(DONE_S)
    for p in (a, b, c, any_ef):
        p.leave()
    assert applied == [64]


def test_a_writer_waits_for_readers_and_readers_wait_for_it():
    lock = IndexLock(lambda ef: None)
    reader = Probe(lock, "read", 10)
    assert reader.inside.wait(DONE_S)
    writer = Probe(lock, "write")
    assert not writer.inside.wait(BLOCKED_S)
    # A waiting writer goes before readers that come after it.
    late_reader = Probe(lock, "read", 10)
    assert not late_reader.inside.wait(BLOCKED_S)
    reader.leave()
    assert writer.inside.wait(DONE_S)
    assert not late_reader.inside.is_set()
    writer.leave()
    assert late_reader.inside.wait(DONE_S)
    late_reader.leave()


def test_another_ef_waits_for_the_current_readers_and_is_not_starved():
    applied: list[int] = []
    lock = IndexLock(applied.append)
    first = Probe(lock, "read", 10)
    assert first.inside.wait(DONE_S)
    wants_20 = Probe(lock, "read", 20)
    assert not wants_20.inside.wait(BLOCKED_S)
    # New readers of the current ef queue behind the one that waits for another.
    more_10 = Probe(lock, "read", 10)
    assert not more_10.inside.wait(BLOCKED_S)
    first.leave()
    assert wants_20.inside.wait(DONE_S)
    assert not more_10.inside.wait(BLOCKED_S)
    also_20 = Probe(lock, "read", 20)
    wants_20.leave()
    assert more_10.inside.wait(DONE_S)
    more_10.leave()
    assert also_20.inside.wait(DONE_S)
    also_20.leave()
    assert applied[:2] == [10, 20]


class FrozenProbe(Probe):
    def _run(self, lock: IndexLock, mode: str, ef: int | None) -> None:
        with lock.frozen():
            self.inside.set()
            self.release.wait(DONE_S)


def test_frozen_keeps_writers_out_but_not_searches_with_another_ef():
    applied: list[int] = []
    lock = IndexLock(applied.append)
    reader = Probe(lock, "read", 10)
    assert reader.inside.wait(DONE_S)
    saving = FrozenProbe(lock, "frozen")
    assert saving.inside.wait(DONE_S)
    reader.leave()
    other_ef = Probe(lock, "read", 20)
    assert other_ef.inside.wait(DONE_S)
    other_ef.leave()
    writer = Probe(lock, "write")
    assert not writer.inside.wait(BLOCKED_S)
    saving.leave()
    assert writer.inside.wait(DONE_S)
    writer.leave()
    assert applied == [10, 20]


def test_a_reader_that_may_not_wait_is_refused_while_a_writer_holds_the_lock():
    lock = IndexLock(lambda ef: None)
    with lock.read(32, wait=False):
        pass  # free: taken at once
    writer = Probe(lock, "write")
    assert writer.inside.wait(DONE_S)
    with pytest.raises(IndexBusy), lock.read(32, wait=False):
        pass
    writer.leave()
    with lock.read(32, wait=False):
        pass


def test_readers_that_waited_through_a_write_go_before_the_next_one():
    """A write of many chunks takes the lock once per chunk; the readers that queued behind
    one chunk run before the next, and readers that come later do not hold the next off."""
    lock = IndexLock(lambda ef: None)
    first = Probe(lock, "write")
    assert first.inside.wait(DONE_S)
    waited = Probe(lock, "read", 10)
    assert not waited.inside.wait(BLOCKED_S)
    second = Probe(lock, "write")  # the next chunk, queued before the first one ends
    assert not second.inside.wait(BLOCKED_S)
    first.leave()
    # The reader that waited through the first chunk goes first, the next chunk after it.
    assert waited.inside.wait(DONE_S)
    assert not second.inside.wait(BLOCKED_S)
    later = Probe(lock, "read", 10)  # came after the first chunk ended: waits for the second
    assert not later.inside.wait(BLOCKED_S)
    waited.leave()
    assert second.inside.wait(DONE_S)
    assert not later.inside.is_set()
    second.leave()
    assert later.inside.wait(DONE_S)
    later.leave()


def test_a_reader_that_gives_up_waiting_does_not_hold_writers_off():
    lock = IndexLock(lambda ef: None)
    writer = Probe(lock, "write")
    assert writer.inside.wait(DONE_S)
    with pytest.raises(IndexBusy), lock.read(10, wait=False):
        pass
    writer.leave()
    again = Probe(lock, "write")
    assert again.inside.wait(DONE_S)
    again.leave()

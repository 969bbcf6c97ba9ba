"""Snapshots of a node's indexes whose offsets never run ahead of what the indexes hold, and
hot swaps of indexes built elsewhere (the bulk backfill)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from nrtrec.ann import AnnError, Snapshot, VectorIndex
from nrtrec.query_node.deltas.consumer import DeltaConsumer
from nrtrec.query_node.errors import QueryNodeError
from nrtrec.query_node.node import QueryNode

log = logging.getLogger(__name__)


class Snapshotter:
    """Snapshots whose offsets never run ahead of the indexes, every ``interval_s`` and after
    every ``every_deltas`` applied deltas (in a thread of its own), and on request; and hot
    swaps of indexes built elsewhere.

    Saving runs outside the consumer's lock, so deltas keep applying while an index is written;
    a snapshot then holds at least what its offsets say, and replaying from them is safe.
    """

    def __init__(
        self,
        node: QueryNode,
        interval_s: float | None = None,
        deltas: DeltaConsumer | None = None,
        every_deltas: int | None = None,
    ):
        self.node = node
        self.interval_s = interval_s
        self.deltas = deltas
        self.every_deltas = every_deltas
        self._taken_at = time.monotonic()
        self._applied_at_last = 0
        # One save or swap at a time: a periodic save must not store a swapped-out index as
        # the newest snapshot, or one with offsets past a swapped-in index.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def take(self) -> list[Snapshot]:
        """Save every index changed since its last snapshot, with the applied offsets."""
        with self._lock:
            offsets = self.deltas.applied_offsets() if self.deltas else dict(self.node.offsets)
            self._taken_at = time.monotonic()
            self._applied_at_last = self.deltas.applied_total if self.deltas else 0
            saved = []
            for index in list(self.node.registry):
                try:
                    saved += self.node.snapshot(
                        index.name, index.model_version, offsets=offsets, only_changed=True
                    )
                except (QueryNodeError, AnnError) as e:  # dropped meanwhile
                    log.info("snapshot of %s v%d skipped: %s", index.name, index.model_version, e)
            return saved

    def load(self, index: VectorIndex, offsets: Mapping[str, int]) -> Snapshot:
        """Serve ``index`` (read from a snapshot with ``offsets``) in place of its version's
        current one without stopping searches; save it here, so a restart serves it too."""
        with self._lock:
            if self.deltas is not None:
                held = self.deltas.swap_in(index, offsets)
            else:
                self.node.registry.swap(index)
                held = dict(offsets)
            [saved] = self.node.snapshot(index.name, index.model_version, offsets=held)
            return saved

    def due(self) -> bool:
        """Whether the interval has passed, or enough deltas were applied, since the last."""
        if self.interval_s is not None and time.monotonic() - self._taken_at >= self.interval_s:
            return True
        applied = self.deltas.applied_total - self._applied_at_last if self.deltas else 0
        return self.every_deltas is not None and applied >= self.every_deltas

    def _run(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(min(self.interval_s, 1.0)):
            if not self.due():
                continue
            try:
                for s in self.take():
                    log.info("snapshot %s v%d: %d items", s.name, s.model_version, s.count)
            except Exception:
                log.exception("periodic snapshot failed")

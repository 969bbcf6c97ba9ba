"""Batching across keys inside one keyed Flink operator: flush on size or on a short timer.

The encoder is fastest on batches, but keyed state is per key, so the batch lives in the
operator's memory, outside Flink's checkpoints. What makes that safe: every key added here also
gets a processing-time timer, and Flink checkpoints timers. A timer that fires for a key this
batcher does not hold (the job was restored from a checkpoint taken while the key waited here)
is an *orphan*: the caller rebuilds that key's work from its keyed state. A key that was
flushed with someone else's batch has nothing left to do when its own timer fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class KeyedBatcher(Generic[T]):
    max_size: int
    pending: dict[str, T] = field(default_factory=dict)
    # Keys flushed before their own timer fired.
    flushed: set[str] = field(default_factory=set)

    def add(self, key: str, work: T) -> dict[str, T] | None:
        """Hold ``work`` for ``key`` (replacing older work of that key); a full batch is
        returned for flushing now."""
        self.pending.pop(key, None)
        self.pending[key] = work
        self.flushed.discard(key)
        return self.take_all() if len(self.pending) >= self.max_size else None

    def take_all(self) -> dict[str, T]:
        batch, self.pending = self.pending, {}
        self.flushed.update(batch)
        return batch

    def on_timer(self, key: str) -> dict[str, T] | Orphan | None:
        """What ``key``'s timer should do: flush the batch, nothing (None), or an ``ORPHAN``."""
        if key in self.pending:
            batch = self.take_all()
            self.flushed.discard(key)
            return batch
        if key in self.flushed:
            self.flushed.discard(key)
            return None
        return ORPHAN


class Orphan:
    def __repr__(self) -> str:
        return "ORPHAN"


ORPHAN = Orphan()


def timer_at(now_ms: int, flush_ms: int) -> int:
    """The end of ``now``'s flush window: keys added in one window share one timer."""
    return (now_ms // flush_ms + 1) * flush_ms

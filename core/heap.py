"""The cyclic garbage collector, kept off the request path, and its pauses measured.

A full collection walks every object the collector tracks, and stops the process meanwhile:
a recommender app has ~88k of them once its imports are done, a query node as many plus two for
each item with a list or object attribute (dicts of strings and numbers are not tracked). On
this project's 2-core machine a full collection of an app took 40 ms and one of a node with
20k such items 29 ms, against a 50 ms store deadline and 100 ms search deadline: a request
caught behind one falls back. What a service builds before it serves (modules, settings,
clients, the indexes restored from snapshots) lives as long as the process, so
``settle_after_startup`` collects once and then ``gc.freeze()``s it: later collections skip
it. Objects made afterwards (items upserted while serving) are collected as before.

``GcPauses`` counts each collection's pause by generation in a service's own registry
(``<prefix>_gc_pause_seconds``, wall time: what a request waiting behind it sees) and the CPU
the collecting thread spent in it (``<prefix>_gc_cpu_seconds``): on saturated cores the two
differ by the time the process waited for a core mid-collection.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger(__name__)

# From a young collection (tens of µs) to a full one of a big heap (tens of ms).
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def settle_after_startup() -> int:
    """Collect now, then keep everything alive out of later collections; returns how many
    objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """``install`` while the service runs, ``uninstall`` when it stops (several apps may share a
    process, each with its own histogram)."""

    def __init__(self, registry: CollectorRegistry, prefix: str):
        self.seconds = Histogram(
            f"{prefix}_gc_pause_seconds",
            "Pauses of the cyclic garbage collector by generation (2: a full collection)",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self.cpu_seconds = Histogram(
            f"{prefix}_gc_cpu_seconds",
            "CPU time of the collecting thread in each collection, by generation",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self._children = [
            (self.seconds.labels(str(g)), self.cpu_seconds.labels(str(g))) for g in range(3)
        ]
        self._started: tuple[float, float] | None = None

    def install(self) -> None:
        gc.callbacks.append(self._note)

    def uninstall(self) -> None:
        if self._note in gc.callbacks:
            gc.callbacks.remove(self._note)

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector itself, which never runs inside another collection: nothing
        # else observes these children, so their locks cannot be held here already.
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
        elif self._started is not None:
            wall, cpu = self._children[info["generation"]]
            wall.observe(time.perf_counter() - self._started[0])
            cpu.observe(time.thread_time() - self._started[1])
            self._started = None


@contextmanager
def serving_heap(pauses: GcPauses, *, freeze: bool) -> Iterator[None]:
    """A service's lifespan from the end of its start-up on: pauses counted, and with
    ``freeze`` (its own process: the command line's services) what start-up made frozen. An
    app sharing a process (a test) must not freeze its neighbours' objects for good."""
    pauses.install()
    if freeze:
        log.info("start-up done: %d objects kept out of garbage collection", settle_after_startup())
    try:
        yield
    finally:
        pauses.uninstall()

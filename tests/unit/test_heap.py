"""The collector kept off the request path (nrtrec/core/heap.py): pauses counted by generation,
and a service's start-up heap frozen in its own process only."""

from __future__ import annotations

import gc
import subprocess
import sys

from prometheus_client import CollectorRegistry

from nrtrec.core.heap import GcPauses


def _full_collections(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("t_gc_pause_seconds_count", {"generation": "2"})
    return value or 0.0


def test_pauses_are_counted_while_installed_only():
    registry = CollectorRegistry()
    pauses = GcPauses(registry, "t")
    pauses.install()
    try:
        gc.collect()
        gc.collect()
    finally:
        pauses.uninstall()
    counted = _full_collections(registry)
    assert counted >= 2  # ours, and any the interpreter ran meanwhile
    assert registry.get_sample_value("t_gc_pause_seconds_sum", {"generation": "2"}) > 0
    cpu = registry.get_sample_value("t_gc_cpu_seconds_count", {"generation": "2"})
    assert cpu == counted
    gc.collect()
    assert _full_collections(registry) == counted
    pauses.uninstall()  # twice is harmless


_FROZEN = """
import gc
from nrtrec.core.heap import settle_after_startup
from nrtrec.query_node import create_app
create_app()
tracked = len(gc.get_objects())
frozen = settle_after_startup()
print(tracked, frozen, len(gc.get_objects()))
"""


def test_startup_objects_are_frozen_out_of_later_collections():
    # In a process of its own: freezing this one would keep the tests' garbage for good.
    out = subprocess.run(
        [sys.executable, "-c", _FROZEN], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    tracked, frozen, left = (int(x) for x in out.split())
    assert frozen > 10_000 and frozen >= tracked * 0.9, out
    # What a full collection still walks: the few objects made since.
    assert left < 1_000, out

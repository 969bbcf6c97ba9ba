"""Fault injection on the real stack, under a steady listing, click and recommendation load:
each process an operator fears losing is killed with SIGKILL in turn, and the stack must heal
with no command (supervision restarts it; every client reconnects; the jobs restore from their
checkpoints), lose no acknowledged listing or click, show nobody an item twice in one list, and
never answer a read with a 5xx (degraded answers say why).

The faults run in order against one stack and one load; the last test settles the account of
everything acknowledged during all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.faults.harness import (
    FaultStack,
    Load,
    heal,
    probe_click_stored,
    probe_listing_searchable,
    settled,
    start_stack,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

FAULTS = {
    "a query-node replica": ["query-node-0"],
    "a whole shard": ["query-node-2", "query-node-3"],
    "the gateway": ["gateway"],
    "the app": ["app"],
    "the Flink TaskManager": ["flink-taskmanager"],
    "Triton": ["triton"],
    "Redis": ["redis"],
    # The stack runs a 3-broker cluster: all three at once is the whole of Kafka gone (clicks
    # wait in the app's spool); one of three is test_one_broker_held_down_stops_nothing.
    "the whole Kafka cluster": ["kafka-0", "kafka-1", "kafka-2"],
}
BROKERS = 3
HELD_DOWN = "kafka-1"
HEAL_S = 240.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, trained_models) -> Iterator[FaultStack]:
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    s = start_stack(run_dir, trained_models.repository.path, kafka_brokers=BROKERS)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def load(stack: FaultStack) -> Iterator[Load]:
    load = Load(stack)
    load.seed_catalogue()
    gateway = stack.settings.gateway.url

    def indexed() -> bool:
        counts = {i["model_version"]: i["count"] for i in httpx.get(f"{gateway}/v1/indexes").json()}
        return counts == {1: 120, 2: 120}

    wait_until("the catalogue indexed", indexed, HEAL_S, interval_s=1, ignoring=(httpx.HTTPError,))
    load.start()
    wait_until("users with stored vectors", lambda: len(load.users_ready) >= 3, HEAL_S)
    try:
        yield load
    finally:
        load.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_the_stack_heals_from_a_sigkill_of(fault: str, stack: FaultStack, load: Load) -> None:
    start = time.monotonic()
    killed = stack.kill(FAULTS[fault])
    heal(stack, load, killed, HEAL_S)
    # Nothing the killed process started lives on without it (Triton's Python stubs did).
    wait_until("the killed process's children gone", lambda: not stack.orphans(), 30,
               diagnose=lambda: "\n".join(stack.orphans()))  # fmt: skip
    during = [r for r in load.reads if r.at >= start]
    assert during, "no read was answered or attempted during the fault"
    failed = [r for r in during if r.status is not None and r.status >= 500]
    assert failed == [], failed[:5]
    assert not any(r.doubled for r in during)
    # Clicks too: accepted (into the spool when the broker is away), or no answer from a dead app.
    refused = [(at, status) for at, status in load.refused_clicks if at >= start]
    assert all(status is None for _, status in refused), refused
    if fault != "the app":
        assert refused == []
    # A degraded answer says why.
    assert all(r.reasons for r in during if r.degraded)
    if fault != "the app":
        # Only the app's own death leaves a read unanswered.
        assert all(r.status is not None for r in during), [r for r in during if r.status is None]


def test_one_broker_held_down_stops_nothing(stack: FaultStack, load: Load) -> None:
    """One broker of three killed and kept down: the pipeline goes on without waiting for it
    (a listing made now is searchable, a click made now is stored, while it is still down)."""
    start = time.monotonic()
    stack.kill([HELD_DOWN])
    stack.runner.supervisor.stop(HELD_DOWN)
    try:
        listed, clicked = probe_listing_searchable(stack, load), probe_click_stored(stack)
        wait_until(
            f"a listing made with {HELD_DOWN} down searchable", listed, HEAL_S, interval_s=0.5
        )
        wait_until(f"a click made with {HELD_DOWN} down stored", clicked, HEAL_S, interval_s=0.5)
        assert stack.pids(HELD_DOWN) is None, f"{HELD_DOWN} came back: the test proves nothing"
    finally:
        stack.runner.supervisor.start(HELD_DOWN)
    during = [r for r in load.reads if r.at >= start]
    assert during and all(r.status is not None and r.status < 500 for r in during), during[:5]
    refused = [(at, status) for at, status in load.refused_clicks if at >= start]
    assert refused == [], refused
    wait_until(f"{HELD_DOWN} back and every service healthy", stack.healthy, HEAL_S)


def test_nothing_acknowledged_is_lost(stack: FaultStack, load: Load) -> None:
    load.stop()
    listings, clicks = settled(stack, load, HEAL_S)
    assert listings == [], listings[:10]
    assert clicks == [], clicks[:10]
    assert len(load.clicks) > 0 and len(load.listings) > 120

"""The user job's item look-up over a real gateway and two real query nodes (one replica each):
a shard that cannot answer is waited for, and is never answered for by the other alone."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from nrtrec.core.settings import GatewaySettings, Settings
from nrtrec.query_node.client import BlockingQueryClient
from nrtrec.query_node.gateway import create_gateway_app
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.streaming.item_lookup import ItemLookupUnavailable, ItemVectorLookup
from tests.ann.helpers import random_vectors
from tests.query_node.helpers import Node, serving, start_node, wait_healthy
from tests.waiting import wait_until

TOKEN = "lookup-token"
PARTITIONS = 4
DIM = 8
N_ITEMS = 40


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    root = tmp_path_factory.mktemp("lookup-nodes")
    shards = [start_node(root / f"shard{s}", TOKEN) for s in range(2)]
    try:
        for node in shards:
            wait_healthy(node)
        yield shards
    finally:
        for node in shards:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
                node.kill()


@pytest.fixture(scope="module")
def gateway(nodes: list[Node]) -> Iterator[str]:
    settings = GatewaySettings(
        shards=[[n.url] for n in nodes],
        num_partitions=PARTITIONS,
        upstream_token=TOKEN,
        request_timeout_s=1.0,
        health_interval_s=0.2,
    )
    with serving(create_gateway_app(Settings(token=TOKEN, gateway=settings))) as url:
        yield url


@pytest.fixture(scope="module")
def catalogue(gateway: str) -> dict[str, np.ndarray]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    spec = {"dim": DIM, "metric": "l2", "model_version": 1}
    assert httpx.put(f"{gateway}/v1/indexes/items", json=spec, headers=auth).status_code == 201
    vectors = random_vectors(N_ITEMS, DIM, seed=5)
    items = {f"item-{i}": vectors[i] for i in range(N_ITEMS)}
    batch = [{"id": i, "vector": v.tolist()} for i, v in items.items()]
    r = httpx.post(f"{gateway}/v1/indexes/items/upsert", json={"items": batch}, headers=auth)
    assert r.status_code == 200 and r.json()["applied"] == N_ITEMS, r.text
    return items


def lookup(gateway: str, partial_wait_s: float) -> ItemVectorLookup:
    # No cache: each call asks the gateway.
    client = BlockingQueryClient(gateway, timeout_s=5.0, retries=0)
    return ItemVectorLookup(client, "items", ttl_s=0, partial_wait_s=partial_wait_s)


def test_every_shard_answers_for_its_items_and_unknown_ids_are_left_out(gateway, catalogue):
    items = lookup(gateway, partial_wait_s=0)
    try:
        found = items.vectors([*catalogue, "no-such-item"], 1)
    finally:
        items.close()
    shards = ShardMap.of(2, PARTITIONS)
    assert {shards.shard_for(i) for i in found} == {0, 1}
    assert set(found) == set(catalogue)
    for item_id, vector in found.items():
        np.testing.assert_allclose(vector, catalogue[item_id], atol=1e-6)


def test_a_stopped_shard_fails_the_look_up_rather_than_leaving_its_items_out(
    nodes, gateway, catalogue
):
    nodes[1].process.send_signal(signal.SIGSTOP)
    try:
        items = lookup(gateway, partial_wait_s=1.0)
        try:
            with pytest.raises(ItemLookupUnavailable, match=r"shard\(s\) \[1\] did not answer"):
                items.vectors(catalogue, 1)
            assert items.partial_answers >= 1
        finally:
            items.close()
    finally:
        nodes[1].process.send_signal(signal.SIGCONT)


def test_no_shard_answering_fails_the_look_up_after_the_wait(nodes, gateway, catalogue):
    for node in nodes:
        node.process.send_signal(signal.SIGSTOP)
    try:
        items = lookup(gateway, partial_wait_s=1.0)
        try:
            no_shard = r"answered 50[34]: shard 0: no replica answered"
            with pytest.raises(ItemLookupUnavailable, match=no_shard):
                items.vectors(catalogue, 1)
        finally:
            items.close()
    finally:
        for node in nodes:
            node.process.send_signal(signal.SIGCONT)


def test_a_shard_back_within_the_wait_completes_the_look_up(nodes, gateway, catalogue):
    items = lookup(gateway, partial_wait_s=120.0)
    result: dict[str, object] = {}

    def look_up() -> None:
        try:
            result["found"] = items.vectors(catalogue, 1)
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    nodes[0].process.send_signal(signal.SIGSTOP)
    thread = threading.Thread(target=look_up, daemon=True)
    try:
        thread.start()
        # The look-up has had a partial answer (shard 0 timed out) and is asking again.
        wait_until("a partial answer", lambda: items.partial_answers > 0, 60)
        assert thread.is_alive(), result
    finally:
        nodes[0].process.send_signal(signal.SIGCONT)
        thread.join(120)
        items.close()
    assert not thread.is_alive(), "the look-up did not return after the shard came back"
    assert "error" not in result, result
    assert set(result["found"]) == set(catalogue)

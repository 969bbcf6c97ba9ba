"""The gateway over real query nodes: 2 shards of 2 replicas, each a `nrtrec query-node` process.

The gateway runs in-process (TestClient, lifespan included); the nodes are subprocesses, so a
replica can be killed with SIGKILL. Merge logic is unit-tested at the top without any node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from nrtrec.core.settings import GatewaySettings, Settings
from nrtrec.query_node.fanout import merge_hits, merge_listings
from nrtrec.query_node.gateway import create_gateway_app
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.schemas.query_api import Metric
from tests import waiting
from tests.ann.helpers import exact_neighbours, random_vectors, recall
from tests.conftest import free_port
from tests.fuzzing import refuse_generated_bad_input
from tests.query_node.helpers import Node, start_node, stop, wait_healthy

NODE_TOKEN = "node-token"
GATEWAY_TOKEN = "gateway-token"
AUTH = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
NODE_AUTH = {"Authorization": f"Bearer {NODE_TOKEN}"}
PARTITIONS = 4
DIM = 16
N_ITEMS = 2000


# ---- merge logic, no nodes ---------------------------------------------------------------


def test_merge_hits_orders_l2_ascending_and_similarity_descending():
    a = [{"id": "a1", "score": 0.1}, {"id": "a2", "score": 0.7}]
    b = [{"id": "b1", "score": 0.3}, {"id": "b2", "score": 0.5}]
    assert [h["id"] for h in merge_hits([a, b], 3, Metric.L2)] == ["a1", "b1", "b2"]
    assert [h["id"] for h in merge_hits([a, b], 3, "ip")] == ["a2", "b2", "b1"]
    assert [h["id"] for h in merge_hits([a, b], 10, Metric.COSINE)] == ["a2", "b2", "b1", "a1"]
    assert merge_hits([], 5, Metric.L2) == [] and merge_hits([[], []], 5, Metric.IP) == []


def test_merge_hits_keeps_an_id_once_at_its_best_score_and_breaks_ties_by_id():
    a = [{"id": "x", "score": 0.9}, {"id": "z", "score": 0.5}]
    b = [{"id": "x", "score": 0.2}, {"id": "y", "score": 0.5}]
    assert merge_hits([a, b], 3, Metric.L2) == [
        {"id": "x", "score": 0.2},
        {"id": "y", "score": 0.5},
        {"id": "z", "score": 0.5},
    ]
    assert merge_hits([a, b], 2, Metric.IP) == [
        {"id": "x", "score": 0.9},
        {"id": "y", "score": 0.5},
    ]


def test_merge_hits_equals_a_global_top_k():
    rng = np.random.default_rng(1)
    scores = rng.random(300)
    hits = [{"id": f"i{n}", "score": float(s)} for n, s in enumerate(scores)]
    shards = [hits[0::3], hits[1::3], hits[2::3]]
    for metric, order in ((Metric.L2, np.argsort(scores)), (Metric.IP, np.argsort(-scores))):
        local = [
            sorted(s, key=lambda h: h["score"], reverse=metric is Metric.IP)[:10] for s in shards
        ]
        assert [h["id"] for h in merge_hits(local, 10, metric)] == [f"i{n}" for n in order[:10]]


def test_merge_listings_sums_counts_per_name_and_version():
    shard0 = [
        {"name": "items", "model_version": 1, "dim": 4, "metric": "l2", "count": 3},
        {"name": "items", "model_version": 2, "dim": 8, "metric": "ip", "count": 1},
    ]
    shard1 = [
        {"name": "items", "model_version": 1, "dim": 4, "metric": "l2", "count": 4},
        {
            "name": "items",
            "model_version": 2,
            "dim": 8,
            "metric": "ip",
            "count": 2,
            "serving": False,
        },
    ]
    assert merge_listings([shard0, shard1]) == [
        {
            "name": "items",
            "model_version": 1,
            "dim": 4,
            "metric": "l2",
            "count": 7,
            "serving": True,
        },
        # Building on one shard: not served through the gateway.
        {
            "name": "items",
            "model_version": 2,
            "dim": 8,
            "metric": "ip",
            "count": 3,
            "serving": False,
        },
    ]


def test_a_bad_shard_map_is_refused():
    with pytest.raises(ValueError, match="at least one shard"):
        create_gateway_app(Settings(gateway=GatewaySettings()))
    with pytest.raises(ValueError, match="must start with http"):
        create_gateway_app(Settings(gateway=GatewaySettings(shards=[["127.0.0.1:1"]])))
    with pytest.raises(ValueError, match="at least as many partitions"):
        urls = [[f"http://127.0.0.1:{p}"] for p in (1, 2, 3)]
        create_gateway_app(Settings(gateway=GatewaySettings(shards=urls, num_partitions=2)))


# ---- real nodes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[list[Node]]]:
    """Shard 0: replicas 0 and 1; shard 1: replicas 0 and 1."""
    root = tmp_path_factory.mktemp("gateway-nodes")
    shards = [
        [start_node(root / f"shard{s}-replica{r}", NODE_TOKEN) for r in range(2)] for s in range(2)
    ]
    try:
        for shard in shards:
            for node in shard:
                wait_healthy(node)
        yield shards
    finally:
        for shard in shards:
            for node in shard:
                if node.process.poll() is None:
                    node.kill()


def gateway_settings(nodes: list[list[Node]], **overrides: object) -> Settings:
    gateway = GatewaySettings(
        shards=[[n.url for n in shard] for shard in nodes],
        num_partitions=PARTITIONS,
        upstream_token=NODE_TOKEN,
        request_timeout_s=2.0,
        health_interval_s=0.2,
    )
    return Settings(token=GATEWAY_TOKEN, gateway=gateway.model_copy(update=overrides))


@pytest.fixture(scope="module")
def gateway(nodes) -> Iterator[TestClient]:
    with TestClient(create_gateway_app(gateway_settings(nodes))) as client:
        yield client


@dataclass
class Catalogue:
    ids: list[str]
    vectors: np.ndarray


@pytest.fixture(scope="module")
def catalogue(gateway) -> Catalogue:
    """``items`` (l2, version 1) with N_ITEMS random vectors, written through the gateway."""
    spec = {"dim": DIM, "metric": "l2", "model_version": 1}
    r = gateway.put("/v1/indexes/items", json=spec, headers=AUTH)
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created[k] for k in (*spec, "name", "count")} == {
        **spec,
        "name": "items",
        "count": 0,
    }
    assert (created["backend"], created["quantization"]) == ("hnsw", "none")
    vectors = random_vectors(N_ITEMS, DIM, seed=3)
    ids = [f"item-{i}" for i in range(N_ITEMS)]
    for start in range(0, N_ITEMS, 500):
        batch = [
            {"id": ids[i], "vector": vectors[i].tolist(), "attributes": {"n": i}}
            for i in range(start, min(start + 500, N_ITEMS))
        ]
        r = gateway.post("/v1/indexes/items/upsert", json={"items": batch}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"model_version": 1, "applied": len(batch), "count": start + len(batch)}
    return Catalogue(ids, vectors)


def held_by(node: Node, name: str = "items") -> set[str]:
    """Every id a node holds: an exact search with k above its count."""
    r = httpx.post(f"{node.url}/v1/indexes/{name}/search", json={"vector": [0.0] * DIM, "k": 5000})
    assert r.status_code == 200, r.text
    return {hit["id"] for hit in r.json()["items"]}


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "Traceback" not in body["detail"]
    return body["detail"]


def test_healthz_and_listing_merge_shards(nodes, gateway, catalogue):
    health = gateway.get("/healthz").json()
    assert health["status"] == "ok"
    assert [[r["up"] for r in s["replicas"]] for s in health["shards"]] == [[True, True]] * 2
    [listed] = gateway.get("/v1/indexes").json()
    memory = listed.pop("memory")
    assert listed == {
        "name": "items",
        "model_version": 1,
        "serving": True,
        "dim": DIM,
        "metric": "l2",
        "count": N_ITEMS,
        "backend": "hnsw",
        "quantization": "none",
    }
    shards = [httpx.get(f"{shard[0].url}/v1/indexes").json()[0] for shard in nodes]
    per_shard = [entry["count"] for entry in shards]
    assert sum(per_shard) == N_ITEMS and min(per_shard) > N_ITEMS // 4
    # Bytes per vector: the shards' figures weighted by their vectors.
    expected = sum(e["count"] * e["memory"]["total_bytes"] for e in shards) / N_ITEMS
    assert memory["total_bytes"] == pytest.approx(expected)
    assert memory["full_precision_bytes"] == DIM * 4
    text = gateway.get("/metrics").text
    assert 'nrtrec_gateway_replica_up{shard="1",url="' + nodes[1][1].url + '"} 1.0' in text
    assert 'route="/v1/indexes/{name}/upsert",status="200"' in text


def test_each_shard_holds_exactly_what_the_partitioner_assigns(nodes, catalogue):
    shard_map = ShardMap.of(len(nodes), PARTITIONS)
    for s, shard in enumerate(nodes):
        expected = {i for i in catalogue.ids if shard_map.shard_for(i) == s}
        for node in shard:
            assert held_by(node) == expected


@pytest.mark.parametrize("k", [10, 100])
def test_search_through_the_gateway_equals_exact_search(gateway, catalogue, k):
    queries = random_vectors(20, DIM, seed=9)
    truth = exact_neighbours(catalogue.vectors, queries, k, Metric.L2)
    found = []
    for q in queries:
        r = gateway.post("/v1/indexes/items/search", json={"vector": q.tolist(), "k": k})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == 1 and body["partial"] is False
        assert body["failed_shards"] == []
        scores = [hit["score"] for hit in body["items"]]
        assert len(scores) == k and scores == sorted(scores)
        found.append([hit["id"] for hit in body["items"]])
    assert recall(found, [[catalogue.ids[i] for i in row] for row in truth]) >= 0.95


def test_merge_hits_keeps_attributes_with_their_hit():
    a = [{"id": "x", "score": 0.9, "attributes": {"s": 0}}]
    b = [{"id": "x", "score": 0.2, "attributes": {"s": 1}}, {"id": "y", "score": 0.5}]
    assert merge_hits([a, b], 2, Metric.L2) == [
        {"id": "x", "score": 0.2, "attributes": {"s": 1}},
        {"id": "y", "score": 0.5},
    ]


def test_search_with_attributes_and_item_look_ups_through_the_gateway(gateway, catalogue):
    q = catalogue.vectors[7].tolist()
    body = {"vector": q, "k": 5, "include_attributes": True}
    r = gateway.post("/v1/indexes/items/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["items"]
    assert hits[0]["id"] == "item-7"
    assert all(h["attributes"] == {"n": int(h["id"].split("-")[1])} for h in hits)
    # Ids of both shards, in the order asked, each once; an unknown id is absent.
    shard_map = ShardMap.of(2, PARTITIONS)
    ids = ["item-3", "nope", "item-1999", "item-0", "item-3"]
    assert {shard_map.shard_for(i) for i in ids[:4]} == {0, 1}
    r = gateway.post("/v1/indexes/items/items", json={"ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["id"] for i in body["items"]] == ["item-3", "item-1999", "item-0"]
    assert body["model_version"] == 1 and body["partial"] is False
    for item in body["items"]:
        n = int(item["id"].split("-")[1])
        assert item["attributes"] == {"n": n}
        assert np.allclose(item["vector"], catalogue.vectors[n], atol=1e-6)
    error(gateway.post("/v1/indexes/items/items", json={"ids": []}), 422, "invalid_request")
    error(gateway.post("/v1/indexes/nothing/items", json={"ids": ["a"]}), 404, "index_not_found")


def test_similarity_metrics_merge_descending_and_a_new_gateway_learns_the_metric(nodes, gateway):
    spec = {"dim": 8, "metric": "ip", "model_version": 1}
    assert gateway.put("/v1/indexes/ip-items", json=spec, headers=AUTH).status_code == 201
    vectors = random_vectors(300, 8, seed=5)
    items = [{"id": f"p{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    r = gateway.post("/v1/indexes/ip-items/upsert", json={"items": items}, headers=AUTH)
    assert r.json()["count"] == 300
    query = random_vectors(1, 8, seed=6)[0]
    truth = [f"p{i}" for i in np.argsort(-(vectors @ query))[:20]]
    # A second gateway has not seen the PUT: it learns the metric from the nodes' listings.
    with TestClient(create_gateway_app(gateway_settings(nodes))) as fresh:
        r = fresh.post("/v1/indexes/ip-items/search", json={"vector": query.tolist(), "k": 20})
    assert [hit["id"] for hit in r.json()["items"]] == truth
    r = gateway.delete("/v1/indexes/ip-items", headers=AUTH)
    assert r.status_code == 200 and r.json() == {
        "dropped": [{"name": "ip-items", "model_version": 1}]
    }
    error(gateway.delete("/v1/indexes/ip-items", headers=AUTH), 404, "index_not_found")


def test_deletes_go_to_the_owning_shard(nodes, gateway, catalogue):
    spec = {"dim": 2, "metric": "l2", "model_version": 1}
    assert gateway.put("/v1/indexes/small", json=spec, headers=AUTH).status_code == 201
    items = [{"id": f"s{i}", "vector": [float(i), 0.0]} for i in range(40)]
    gateway.post("/v1/indexes/small/upsert", json={"items": items}, headers=AUTH)
    # One id: one shard written, the other's count read from its listing.
    r = gateway.post("/v1/indexes/small/delete", json={"ids": ["s0"]}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"model_version": 1, "applied": 1, "count": 39}
    r = gateway.post("/v1/indexes/small/delete", json={"ids": ["s1", "s2", "nope"]}, headers=AUTH)
    assert r.json() == {"model_version": 1, "applied": 2, "count": 37}
    r = gateway.post("/v1/indexes/small/search", json={"vector": [0.0, 0.0], "k": 2})
    assert [hit["id"] for hit in r.json()["items"]] == ["s3", "s4"]
    for shard in nodes:
        for node in shard:
            r = httpx.post(f"{node.url}/v1/indexes/small/snapshot", headers=NODE_AUTH)
            assert r.status_code == 200
    r = gateway.post("/v1/indexes/small/snapshot", headers=AUTH)
    assert r.status_code == 200 and len(r.json()["snapshots"]) == 4
    assert gateway.delete("/v1/indexes/small", headers=AUTH).status_code == 200


def test_without_a_version_the_newest_on_every_shard_answers(nodes, gateway):
    spec = {"dim": 2, "metric": "l2", "model_version": 1}
    assert gateway.put("/v1/indexes/vers", json=spec, headers=AUTH).status_code == 201
    items = [{"id": f"v{i}", "vector": [float(i), 0.0]} for i in range(20)]
    gateway.post("/v1/indexes/vers/upsert", json={"items": items}, headers=AUTH)
    # Version 2 appears on shard 0 only (created there directly, as a rollout would, unevenly).
    on_shard0 = next(i["id"] for i in items if ShardMap.of(2, PARTITIONS).shard_for(i["id"]) == 0)
    for node in nodes[0]:
        r = httpx.put(
            f"{node.url}/v1/indexes/vers", json={**spec, "model_version": 2}, headers=NODE_AUTH
        )
        assert r.status_code == 201
        upsert = {"items": [{"id": on_shard0, "vector": [0.0, 0.0]}]}
        httpx.post(f"{node.url}/v1/indexes/vers/upsert", json=upsert, headers=NODE_AUTH)
    r = gateway.post("/v1/indexes/vers/search", json={"vector": [0.0, 0.0], "k": 20})
    assert r.json()["model_version"] == 1 and r.json()["partial"] is False
    assert len(r.json()["items"]) == 20
    # Asked for version 2, shard 1 has none: the answer is partial and says so.
    r = gateway.post("/v1/indexes/vers/search", json={"vector": [0.0, 0.0], "model_version": 2})
    body = r.json()
    assert r.status_code == 200 and body["partial"] is True and body["failed_shards"] == [1]
    assert body["model_version"] == 2 and [h["id"] for h in body["items"]] == [on_shard0]
    r = gateway.delete("/v1/indexes/vers", headers=AUTH)
    assert r.json()["dropped"] == [
        {"name": "vers", "model_version": 1},
        {"name": "vers", "model_version": 2},
    ]


def test_a_building_version_is_served_once_promoted_on_every_shard(nodes, gateway):
    building = {"dim": 2, "metric": "cosine", "model_version": 3, "serving": False}
    r = gateway.put("/v1/indexes/roll", json=building, headers=AUTH)
    assert r.status_code == 201 and r.json()["serving"] is False
    items = [{"id": f"r{i}", "vector": [1.0, float(i)]} for i in range(10)]
    gateway.post("/v1/indexes/roll/upsert", json={"items": items, "model_version": 3}, headers=AUTH)

    def listed() -> dict:
        return next(i for i in gateway.get("/v1/indexes").json() if i["name"] == "roll")

    assert listed()["serving"] is False and listed()["count"] == 10
    # Promoted on one shard's nodes only (a promote that died half-way): still not served.
    for node in nodes[0]:
        r = httpx.post(
            f"{node.url}/v1/indexes/roll/promote", json={"model_version": 3}, headers=NODE_AUTH
        )
        assert r.status_code == 200 and r.json()["serving"] is True
    assert listed()["serving"] is False
    assert gateway.post("/v1/indexes/roll/promote", json={"model_version": 3}).status_code == 401
    r = gateway.post("/v1/indexes/roll/promote", json={"model_version": 3}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {**listed(), "serving": True}
    assert listed()["serving"] is True
    # A retire's first step: held back on every replica of every shard, items kept.
    assert gateway.post("/v1/indexes/roll/hold-back", json={"model_version": 3}).status_code == 401
    r = gateway.post("/v1/indexes/roll/hold-back", json={"model_version": 3}, headers=AUTH)
    assert r.status_code == 200 and r.json()["serving"] is False
    assert listed()["serving"] is False and listed()["count"] == 10
    for node in (n for shard in nodes for n in shard):
        [held] = [i for i in httpx.get(f"{node.url}/v1/indexes").json() if i["name"] == "roll"]
        assert held["serving"] is False
    gateway.delete("/v1/indexes/roll", headers=AUTH)


def test_bad_input_is_a_4xx_with_the_reason(gateway, catalogue):
    search = "/v1/indexes/items/search"
    # Checked by the gateway itself.
    detail = error(gateway.post(search, json={"vector": "x", "k": 3}), 422, "invalid_request")
    assert "vector" in detail
    error(gateway.post(search, json={"vector": [1.0], "k": 3, "bogus": 1}), 422, "invalid_request")
    error(
        gateway.post("/v1/indexes/bad%20name/search", json={"vector": [1.0]}),
        422,
        "invalid_request",
    )
    # Checked by the nodes and passed through with their reason.
    detail = error(gateway.post(search, json={"vector": [1.0] * 3, "k": 3}), 422, "invalid_vector")
    assert "dimension" in detail or "dim" in detail
    error(gateway.post(search, json={"vector": [1.0] * DIM, "k": 0}), 400, "out_of_range")
    missing = "/v1/indexes/nope/search"
    error(gateway.post(missing, json={"vector": [1.0] * DIM}), 404, "index_not_found")
    other = {"dim": 3, "metric": "l2", "model_version": 1}
    detail = error(gateway.put("/v1/indexes/items", json=other, headers=AUTH), 409, "index_exists")
    assert "dim 16 (asked 3)" in detail
    bad = {"items": [{"id": "item-1", "vector": [1.0, 2.0]}]}
    error(gateway.post("/v1/indexes/items/upsert", json=bad, headers=AUTH), 422, "invalid_vector")
    error(
        gateway.post("/v1/indexes/items/upsert", json={"items": []}, headers=AUTH),
        422,
        "invalid_request",
    )
    # Checked by the gateway before any shard takes its part.
    mixed = {"items": [{"id": "a", "vector": [1.0] * DIM}, {"id": "b", "vector": [1.0] * 3}]}
    detail = error(
        gateway.post("/v1/indexes/items/upsert", json=mixed, headers=AUTH), 422, "invalid_vector"
    )
    assert "one dimension" in detail
    ids = {"ids": [f"x{i}" for i in range(10_001)]}
    error(gateway.post("/v1/indexes/items/delete", json=ids, headers=AUTH), 413, "too_large")
    wide = {"vector": [1.0] * DIM, "filter": {"a": {"in": list(range(300))}}}
    error(gateway.post("/v1/indexes/items/search", json=wide), 422, "invalid_filter")


def test_generated_bad_input_is_refused_cleanly_and_changes_nothing(gateway, catalogue):
    def state() -> tuple:
        listing = gateway.get("/v1/indexes").json()
        probe = {"vector": catalogue.vectors[0].tolist(), "k": 20}
        top = gateway.post("/v1/indexes/items/search", json=probe).json()
        found = gateway.post("/v1/indexes/items/items", json={"ids": catalogue.ids[:50]}).json()
        return listing, top, found

    before = state()
    seen = refuse_generated_bad_input(gateway.app, gateway, AUTH, pinned={"name": "items"})
    assert {"/v1/indexes/{name}/upsert", "/v1/indexes/{name}/search"} <= {p for _, p, _ in seen}
    assert state() == before


def test_a_write_half_refused_says_what_was_applied(gateway):
    spec = {"dim": 2, "metric": "cosine", "model_version": 1}
    assert gateway.put("/v1/indexes/cos", json=spec, headers=AUTH).status_code == 201
    shard_map = ShardMap.of(2, PARTITIONS)
    a = next(f"c{i}" for i in range(100) if shard_map.shard_for(f"c{i}") == 0)
    b = next(f"c{i}" for i in range(100) if shard_map.shard_for(f"c{i}") == 1)
    # A zero vector has no direction: shard 0 refuses its item, shard 1 takes its own.
    items = {"items": [{"id": a, "vector": [0.0, 0.0]}, {"id": b, "vector": [1.0, 0.0]}]}
    r = gateway.post("/v1/indexes/cos/upsert", json=items, headers=AUTH)
    assert "shard(s) [1] applied their part" in error(r, 422, "invalid_vector")
    listed = gateway.get("/v1/indexes").json()[0]
    assert (listed["name"], listed["count"]) == ("cos", 1)
    assert gateway.delete("/v1/indexes/cos", headers=AUTH).status_code == 200


def test_writes_need_the_gateway_token_and_nodes_get_the_upstream_one(nodes, gateway, catalogue):
    spec = {"dim": 2, "metric": "l2", "model_version": 1}
    error(gateway.put("/v1/indexes/t", json=spec), 401, "unauthorized")
    wrong = {"Authorization": f"Bearer {NODE_TOKEN}"}
    error(gateway.put("/v1/indexes/t", json=spec, headers=wrong), 401, "unauthorized")
    item = {"items": [{"id": "item-1", "vector": [0.0] * DIM}]}
    error(gateway.post("/v1/indexes/items/upsert", json=item), 401, "unauthorized")
    error(gateway.post("/v1/indexes/items/delete", json={"ids": ["a"]}), 401, "unauthorized")
    error(gateway.delete("/v1/indexes/items"), 401, "unauthorized")
    error(gateway.post("/v1/indexes/items/snapshot"), 401, "unauthorized")
    # Reads stay open.
    assert gateway.get("/v1/indexes").status_code == 200
    # A gateway whose upstream token the nodes refuse says so, as its own fault (502).
    with TestClient(create_gateway_app(gateway_settings(nodes, upstream_token="x"))) as bad:
        detail = error(
            bad.put("/v1/indexes/t", json=spec, headers=AUTH), 502, "upstream_unauthorized"
        )
        assert "upstream token" in detail


def test_gateway_command_serves_the_shards(nodes, catalogue, tmp_path):
    port = free_port()
    command = [str(Path(sys.executable).with_name("nrtrec")), "gateway", "--port", str(port)]
    for shard in nodes:
        command += ["--shard", ",".join(n.url for n in shard)]
    command += ["--num-partitions", str(PARTITIONS), "--token", GATEWAY_TOKEN]
    command += ["--upstream-token", NODE_TOKEN]
    env = {**os.environ, "NRTREC_RUN_DIR": str(tmp_path / "run")}
    with open(tmp_path / "gateway.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(Node(base, process, tmp_path / "gateway.log"))
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        r = httpx.post(f"{base}/v1/indexes/items/search", json={"vector": [0.0] * DIM, "k": 5})
        assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
        spec = {"dim": 2, "metric": "l2", "model_version": 1}
        error(httpx.put(f"{base}/v1/indexes/cli", json=spec), 401, "unauthorized")
    finally:
        stop(process)
    assert process.returncode == 0, (tmp_path / "gateway.log").read_text()


def test_gateway_command_refuses_no_shards(tmp_path):
    command = [str(Path(sys.executable).with_name("nrtrec")), "gateway"]
    env = {**os.environ, "NRTREC_RUN_DIR": str(tmp_path / "run")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1 and "at least one shard" in result.stderr


def test_replica_and_shard_failures(nodes, gateway, catalogue):
    """Runs last: it kills nodes of the module's cluster."""
    queries = random_vectors(10, DIM, seed=21)

    def search_all() -> list[dict]:
        answers = []
        for q in queries:
            r = gateway.post("/v1/indexes/items/search", json={"vector": q.tolist(), "k": 10})
            assert r.status_code == 200, r.text
            answers.append(r.json())
        return answers

    before = search_all()
    # One replica of shard 0 dies: every search still has every shard's hits.
    nodes[0][0].kill()
    for _ in range(3):
        assert search_all() == before
    waiting.wait_until(
        "the health check marks the replica down",
        lambda: not gateway.get("/healthz").json()["shards"][0]["replicas"][0]["up"],
        10,
    )
    assert gateway.get("/healthz").json()["status"] == "ok"

    # The other replica of shard 0 dies too: answers come from shard 1 alone, and say so.
    nodes[0][1].kill()
    shard_map = ShardMap.of(2, PARTITIONS)
    partial = search_all()
    for answer in partial:
        assert answer["partial"] is True and answer["failed_shards"] == [0]
        ids = [hit["id"] for hit in answer["items"]]
        assert len(ids) == 10 and all(shard_map.shard_for(i) == 1 for i in ids)
    assert gateway.get("/healthz").json()["status"] == "degraded"
    # A look-up gets the items of the shard that answers, and names the other.
    on = {s: [i for i in catalogue.ids[:20] if shard_map.shard_for(i) == s][:2] for s in (0, 1)}
    r = gateway.post("/v1/indexes/items/items", json={"ids": on[0] + on[1]})
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == on[1]
    assert r.json()["partial"] is True and r.json()["failed_shards"] == [0]

    # A replica of shard 1 hangs (SIGSTOP): a search that picks it times out on it and asks
    # the other within the deadline; then it is marked down and skipped.
    nodes[1][0].process.send_signal(signal.SIGSTOP)
    try:
        assert search_all() == partial
        # The deadline cut the call to the hung replica, which is marked down for it.
        hung = gateway.get("/healthz").json()["shards"][1]["replicas"][0]
        assert hung["up"] is False and "timed out" in hung["reason"], hung
        r = gateway.post("/v1/indexes/items/search", json={"vector": [0.0] * DIM, "k": 1})
        assert r.status_code == 200 and r.json()["failed_shards"] == [0]
        # A write is not held up by it for long either (it gets the short deadline).
        on_shard1 = next(i for i in catalogue.ids if shard_map.shard_for(i) == 1)
        write = {"items": [{"id": on_shard1, "vector": [0.5] * DIM}]}
        r = gateway.post("/v1/indexes/items/upsert", json=write, headers=AUTH)
        assert r.status_code == 200 and r.json()["applied"] == 1
    finally:
        nodes[1][0].process.send_signal(signal.SIGCONT)
    text = gateway.get("/metrics").text
    assert 'nrtrec_gateway_partial_searches_total{index="items",shard="0"}' in text
    assert 'nrtrec_gateway_upstream_failures_total{kind="timeout",shard="1"}' in text

    # A write for shard 0 has nowhere to go: 503, naming the shard; shard 1 still takes its own.
    on_shard0 = next(i for i in catalogue.ids if shard_map.shard_for(i) == 0)
    write = {"items": [{"id": on_shard0, "vector": [0.0] * DIM}]}
    detail = error(
        gateway.post("/v1/indexes/items/upsert", json=write, headers=AUTH),
        503,
        "shard_unavailable",
    )
    assert "shard 0" in detail
    write = {"items": [{"id": on_shard1, "vector": [0.0] * DIM}]}
    r = gateway.post("/v1/indexes/items/upsert", json=write, headers=AUTH)
    assert r.status_code == 200 and r.json()["applied"] == 1
    # The listing still answers, naming the missing shard.
    r = gateway.get("/v1/indexes")
    assert r.status_code == 200 and r.headers["X-Nrtrec-Failed-Shards"] == "0"

    # No shard at all: 503, not a partial answer.
    for node in nodes[1]:
        node.kill()
    r = gateway.post("/v1/indexes/items/search", json={"vector": [0.0] * DIM, "k": 3})
    error(r, 503, "shard_unavailable")

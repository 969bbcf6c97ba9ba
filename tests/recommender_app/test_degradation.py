"""Degradation: a slow or stopped store, a slow or dead shard, no gateway at all. The app
answers within its deadline with what is available and says so (``degraded``, ``reasons``);
never a 500. Real servers, deliberately stopped: a Redis of the test's own (SIGSTOP hangs it,
SIGKILL ends it) and query nodes of this module's own cluster."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from nrtrec.recommender_app import create_app
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.user_store import open_store
from tests.conftest import free_port
from tests.recommender_app.cluster import (
    PARTITIONS,
    Cluster,
    load_catalogue,
    put_user,
    start_cluster,
    store_settings,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DEADLINE_S = 0.3


@pytest.fixture
def own_redis(tmp_path) -> Iterator[subprocess.Popen]:
    """A Redis of this test's own, to hang or kill."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    process.port = port  # type: ignore[attr-defined]
    client = redis.Redis(port=port, socket_timeout=1)
    wait_until("redis-server started", client.ping, 10, ignoring=(redis.ConnectionError,))
    try:
        yield process
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory, catalogue) -> Iterator[Cluster]:
    """Two shards of this module's own: tests here stop them."""
    c = start_cluster(tmp_path_factory.mktemp("degradation-cluster"))
    try:
        load_catalogue(c.gateway.url, catalogue)
        yield c
    finally:
        c.close()


def app_for(
    redis_port: int, gateway_url: str, shards: list[list[str]] | None = None, **app: object
):
    """Settings and a client of an app over the gateway, or with ``shards`` over the shards
    themselves (its own fan-out)."""
    given = {"deadline_s": DEADLINE_S, "popular_refresh_s": 0.1, "versions_ttl_s": 0.1, **app}
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    settings = store_settings(redis_url, gateway_url=gateway_url, shards=shards, **given)
    return settings, TestClient(create_app(settings))


def answer(client: TestClient, path: str) -> dict:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


def popular_are(client: TestClient, expected: list[str]) -> None:
    """The app's popular items (refreshed in the background) are ``expected``."""
    answer = lambda: ids(client.get("/v1/users/nobody/recommendations").json())  # noqa: E731
    wait_until(f"popular items {expected}", lambda: answer() == expected, 5.0)


def not_degraded(client: TestClient) -> None:
    answer = lambda: client.get("/v1/users/u1/recommendations").json()  # noqa: E731
    wait_until("u1's answer not degraded", lambda: answer()["degraded"] is False, 5.0)


def test_a_hung_store_gives_cached_popular_items_within_the_deadline(
    own_redis, own_cluster, catalogue
):
    settings, app = app_for(own_redis.port, own_cluster.gateway.url)
    with open_store(settings) as store, app as client:
        put_user(store, "u1", {2: catalogue.vectors[2][0]})
        store.add_views({"5": 3, "6": 2})
        popular_are(client, ["5", "6"])
        not_degraded(client)

        own_redis.send_signal(signal.SIGSTOP)  # Redis hangs: accepts nothing, answers nothing
        try:
            for path in ("/v1/users/u1/recommendations", "/v1/users/nobody/recommendations"):
                body = answer(client, path)
                assert body["source"] == "popular" and ids(body) == ["5", "6"]
                assert body["degraded"] is True
                assert body["reasons"][0].startswith("store_unavailable:"), body["reasons"]
                # A store timeout (the client's socket, or the app's 50 ms) cut the wait.
                timed_out = ("no answer within 50 ms", "Timeout reading from socket")
                assert any(t in body["reasons"][0] for t in timed_out), body["reasons"]
            # The page still renders, with what there is.
            r = client.get("/?user=u1")
            assert r.status_code == 200 and "Some results may be missing" in r.text
            wait_until(
                "healthz degraded",
                lambda: client.get("/healthz").json()["status"] == "degraded",
                5.0,
            )
        finally:
            own_redis.send_signal(signal.SIGCONT)
        not_degraded(client)
        assert client.get("/v1/users/u1/recommendations").json()["source"] == "personalized"


def test_a_dead_store_gives_popular_items_and_says_so(own_redis, own_cluster, catalogue):
    settings, app = app_for(own_redis.port, own_cluster.gateway.url)
    with open_store(settings) as store, app as client:
        put_user(store, "u1", {2: catalogue.vectors[2][0]})
        store.add_views({"9": 1})
        popular_are(client, ["9"])
        own_redis.kill()
        own_redis.wait()
        body = answer(client, "/v1/users/u1/recommendations")
        assert body["source"] == "popular" and ids(body) == ["9"] and body["degraded"] is True
        assert body["reasons"][0].startswith("store_unavailable:")
        body = client.get("/v1/users/u1/recent-views").json()
        assert body["items"] == [] and body["degraded"] is True


def test_a_store_down_from_the_start_still_answers(own_cluster):
    # Nothing ever listened there: no popular items either, and the answer says why.
    _, app = app_for(free_port(), own_cluster.gateway.url)
    with app as client:
        body = answer(client, "/v1/users/u1/recommendations")
        assert body == {
            "items": [],
            "model_version": None,
            "source": "popular",
            "degraded": True,
            "reasons": body["reasons"],
            # Served all the same: a list of its own, logged as an impression.
            "arm": "default",
            "request_id": body["request_id"],
            "popularity_prior": 0.0,  # no user vector: nothing to add a prior to
            "fresh_boost": 0.0,
        }
        assert [r.split(":")[0] for r in body["reasons"]] == ["store_unavailable"] * 2
        assert len(body["request_id"]) == 32


def test_no_gateway_gives_popular_items_and_says_so(own_redis, catalogue):
    settings, app = app_for(own_redis.port, f"http://127.0.0.1:{free_port()}")
    with open_store(settings) as store, app as client:
        put_user(store, "u1", {2: catalogue.vectors[2][0]})
        store.add_views({"3": 1})
        popular_are(client, ["3"])
        for path in ("/v1/users/u1/recommendations", "/v1/items/3/similar"):
            body = answer(client, path)
            assert body["source"] == "popular" and body["degraded"] is True
            assert body["reasons"][0].startswith("search_unavailable:"), body["reasons"]
        # Popular items have no titles without the gateway, but they are there.
        assert ids(body) == [] and "title" not in body  # the item itself is left out
        assert ids(client.get("/v1/users/u1/recommendations").json()) == ["3"]


def test_a_hung_shard_answers_within_the_deadline(own_redis, own_cluster, catalogue):
    """The gateway waits 0.5 s for a shard; the app waits less (search_timeout_s 0.1 s)
    and answers popular items; with more patience it gets the other shard's items."""
    node = own_cluster.nodes[1]
    settings, app = app_for(own_redis.port, own_cluster.gateway.url, search_timeout_s=0.1)
    with open_store(settings) as store, app as client:
        put_user(store, "u1", {2: catalogue.vectors[2][0]})
        store.add_views({"3": 1})
        popular_are(client, ["3"])
        node.process.send_signal(signal.SIGSTOP)
        try:
            body = answer(client, "/v1/users/u1/recommendations")
            assert body["source"] == "popular" and body["degraded"] is True
            assert body["reasons"][0].startswith("search_unavailable:")
            # The app's search timeout (100 ms) cut it, before the gateway's 0.5 s for a shard.
            assert "no answer within 100 ms" in body["reasons"][0], body["reasons"]
        finally:
            node.process.send_signal(signal.SIGCONT)
    # The same store (and key prefix), more patience.
    patient = settings.app.model_copy(update={"search_timeout_s": 1.5, "deadline_s": 2.0})
    with TestClient(create_app(settings.model_copy(update={"app": patient}))) as client:
        node.process.send_signal(signal.SIGSTOP)
        try:
            body = client.get("/v1/users/u1/recommendations").json()
        finally:
            node.process.send_signal(signal.SIGCONT)
        assert body["source"] == "personalized" and body["degraded"] is True, body
        assert body["reasons"][0].startswith("partial_results: shard(s) [1]")


def test_a_hung_shard_is_left_out_by_the_apps_own_fan_out(own_redis, own_cluster, catalogue):
    """Reading the shards itself, the app gives each shard a share of its own search deadline
    (not the gateway's 0.5 s): a hung shard is left out and named, the other shard answers."""
    node = own_cluster.nodes[1]
    shards = own_cluster.shard_urls()
    settings, app = app_for(
        own_redis.port, own_cluster.gateway.url, shards, search_timeout_s=0.3, deadline_s=1.5
    )
    with open_store(settings) as store, app as client:
        put_user(store, "u1", {2: catalogue.vectors[2][0]})
        not_degraded(client)
        node.process.send_signal(signal.SIGSTOP)
        try:
            body = answer(client, "/v1/users/u1/recommendations")
        finally:
            node.process.send_signal(signal.SIGCONT)
        assert body["source"] == "personalized" and body["degraded"] is True, body
        assert body["reasons"][0].startswith("partial_results: shard(s) [1]"), body["reasons"]


def test_a_dead_shard_gives_the_other_shards_items_and_says_so(own_redis, own_cluster, catalogue):
    """Runs last: it kills a node of the module's cluster. The same answers whether the app
    reads through the gateway or from the shards itself."""
    shard_map = ShardMap.of(2, PARTITIONS)
    query = catalogue.vectors[2][0]
    apps = {
        "gateway": app_for(own_redis.port, own_cluster.gateway.url),
        "shards": app_for(own_redis.port, own_cluster.gateway.url, own_cluster.shard_urls()),
    }
    with contextlib.ExitStack() as running:
        clients = {}
        for path, (settings, app) in apps.items():
            store = running.enter_context(open_store(settings))
            put_user(store, "u1", {2: query}, recent=["1"])
            clients[path] = running.enter_context(app)
            not_degraded(clients[path])
        own_cluster.nodes[1].kill()
        for path, client in clients.items():
            body = answer(client, "/v1/users/u1/recommendations?k=5")
            assert body["source"] == "personalized" and body["degraded"] is True, (path, body)
            assert body["reasons"][0].startswith("partial_results: shard(s) [1]"), path
            on_shard0 = lambda i: shard_map.shard_for(i) == 0 and i != "1"  # noqa: E731
            assert ids(body) == catalogue.exact(2, query, 5, keep=on_shard0), path
            # Similar items of an item on the live shard: partial too; of one on the dead
            # shard: its vector cannot be read, so popular items, saying why.
            item0 = next(i for i in catalogue.ids if shard_map.shard_for(i) == 0)
            item1 = next(i for i in catalogue.ids if shard_map.shard_for(i) == 1)
            body = client.get(f"/v1/items/{item0}/similar").json()
            assert body["source"] == "personalized" and body["degraded"] is True, path
            body = client.get(f"/v1/items/{item1}/similar").json()
            assert body["source"] == "popular" and body["degraded"] is True, path
            assert body["reasons"][0].startswith("search_unavailable:"), path
            assert "shard 1: no replica answered" in body["reasons"][0], (path, body)
            assert "partial_results" in client.get("/metrics").text
        # The app's own fan-out counts the failed calls and the partial searches.
        exposition = clients["shards"].get("/metrics").text
        assert 'nrtrec_app_partial_searches_total{index="items",shard="1"}' in exposition
        assert 'nrtrec_app_upstream_failures_total{kind="unavailable",shard="1"}' in exposition

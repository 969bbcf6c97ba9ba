"""A query node recovers by itself, from the durable declarations and ``item-deltas`` alone:
a node started from nothing (a new replica, a lost data dir) builds every declared index and
converges to its peer; a node killed before any snapshot comes back whole; nothing is
dead-lettered for want of an index the node was told to build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from nrtrec.core.settings import QueryNodeSettings, Settings
from nrtrec.query_node import create_app
from nrtrec.query_node.node import QueryNode
from tests.ann.helpers import random_vectors
from tests.conftest import free_port
from tests.query_node.helpers import serving, stop
from tests.query_node.kafka_helpers import (
    AUTH,
    DIM,
    TOKEN,
    DeltaProducer,
    Topics,
    records_on,
    settings_for,
)
from tests.waiting import wait_healthy, wait_until

pytestmark = pytest.mark.integration

ALL = [0, 1, 2, 3]


def stored(client: httpx.Client, ids: list[str], version: int) -> dict[str, list[float]]:
    r = client.post("/v1/indexes/items/items", json={"ids": ids, "model_version": version})
    assert r.status_code == 200, r.text
    return {item["id"]: item["vector"] for item in r.json()["items"]}


def listing(client: httpx.Client) -> dict[int, int]:
    return {i["model_version"]: i["count"] for i in client.get("/v1/indexes").json()}


def test_a_replica_started_from_nothing_builds_the_declared_indexes_and_converges(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(80, DIM, seed=11)
    ids = [f"item-{i}" for i in range(40)]
    peer = settings_for(tmp_path, bootstrap, topics, "peer", partitions=ALL)
    with serving(create_app(peer)) as url, httpx.Client(base_url=url, headers=AUTH) as a:
        for version in (1, 2, 3):
            spec = {"dim": DIM, "metric": "cosine", "model_version": version}
            # Version 2 on the other backend: the declaration carries it to the replica.
            spec |= {"backend": "faiss"} if version == 2 else {}
            assert a.put("/v1/indexes/items", json=spec).status_code == 201
        # Version 3 is retired: its deltas stay on the topic, and are not an error anywhere.
        assert a.delete("/v1/indexes/items", params={"model_version": 3}).status_code == 200
        for i, item in enumerate(ids):
            producer.upsert(item, v[i], version=1)
            producer.upsert(item, v[40 + i], version=2)
            producer.upsert(item, v[i], version=3)
        for item in ids[:5]:
            producer.delete(item, version=2)
        producer.upsert(ids[6], v[79], version=1)  # an update
        producer.flush()
        wait_until("the peer applied everything", lambda: listing(a) == {1: 40, 2: 35})
        before = {version: stored(a, ids, version) for version in (1, 2)}

        # A new replica: an empty data dir, a consumer group of its own, no index created.
        fresh = settings_for(tmp_path, bootstrap, topics, "fresh", partitions=ALL)
        with serving(create_app(fresh)) as url2, httpx.Client(base_url=url2) as b:
            wait_until("the replica caught up", lambda: listing(b) == {1: 40, 2: 35})
            after = {version: stored(b, ids, version) for version in (1, 2)}
            backends = {i["model_version"]: i["backend"] for i in b.get("/v1/indexes").json()}
    assert backends == {1: "hnsw", 2: "faiss"}
    assert after == before
    assert after[1][ids[6]] == pytest.approx((v[79] / (v[79] ** 2).sum() ** 0.5).tolist(), 1e-5)
    # Nothing was dead-lettered, by either node: every version was declared, or dropped.
    assert records_on(bootstrap, topics.dead_letters) == 0


def test_a_node_killed_before_any_snapshot_comes_back_whole(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    """The failure of the field: the node's data dir holds no snapshot when it dies, and no
    one creates its index again; it must do it alone, and replay every delta."""
    port = free_port()
    nrtrec = Path(sys.executable).with_name("nrtrec")
    command = [str(nrtrec), "query-node", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--token", TOKEN, "--kafka", bootstrap]
    command += ["--partitions", "0,1,2,3", "--group", f"test-{uuid.uuid4().hex[:8]}"]
    env = {
        **os.environ,
        "NRTREC_RUN_DIR": str(tmp_path / "run"),
        "NRTREC_TOPICS__ITEM_DELTAS": topics.deltas,
        "NRTREC_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "NRTREC_TOPICS__INDEX_DECLARATIONS": topics.declarations,
        # No snapshot before the kill, by time or by count.
        "NRTREC_QUERY_NODE__SNAPSHOT_INTERVAL_S": "3600",
        "NRTREC_QUERY_NODE__SNAPSHOT_EVERY_DELTAS": "1000000",
    }
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "node.log"
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(30, DIM, seed=12)

    def start() -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_healthy(f"{base}/healthz", process, log=log)
        return process

    process = start()
    try:
        with httpx.Client(base_url=base, headers=AUTH) as client:
            spec = {"dim": DIM, "metric": "l2", "model_version": 1}
            assert client.put("/v1/indexes/items", json=spec).status_code == 201
            for i in range(30):
                producer.upsert(f"item-{i}", v[i])
            producer.flush()
            wait_until("applied", lambda: listing(client) == {1: 30})
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            assert not list((tmp_path / "data").rglob("meta.json")), "a snapshot was written"
            for i in range(30, 40):  # while it is down
                producer.upsert(f"item-{i}", v[i % 30])
            producer.flush()
            process = start()
            wait_until(
                "rebuilt and replayed", lambda: listing(client) == {1: 40}, diagnose=log.read_text
            )
            ids = [f"item-{i}" for i in range(40)]
            assert set(stored(client, ids, 1)) == set(ids)
    finally:
        stop(process)
    assert records_on(bootstrap, topics.dead_letters) == 0


def test_snapshots_are_taken_after_so_many_deltas(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(tmp_path, bootstrap, topics, partitions=ALL)
    qn = settings.query_node.model_copy(
        update={"snapshot_interval_s": 3600.0, "snapshot_every_deltas": 20}
    )
    settings = settings.model_copy(update={"query_node": qn})
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(25, DIM, seed=13)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, headers=AUTH) as c:
        assert c.put("/v1/indexes/items", json={"dim": DIM, "metric": "l2", "model_version": 1})
        for i in range(25):
            producer.upsert(f"item-{i}", v[i])
        producer.flush()
        snapshots = lambda: list((tmp_path / "node" / "data").rglob("meta.json"))  # noqa: E731
        wait_until("a snapshot after 20 deltas", lambda: snapshots())


def serving_states(client: httpx.Client) -> dict[int, bool]:
    return {i["model_version"]: i["serving"] for i in client.get("/v1/indexes").json()}


def test_a_building_version_is_building_on_every_replica_until_promoted(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    """A rollout creates its version building; every replica (one started later too) holds it
    without serving it, takes its deltas, and serves it once it is promoted anywhere."""
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(20, DIM, seed=5)
    peer = settings_for(tmp_path, bootstrap, topics, "peer", partitions=ALL)
    with serving(create_app(peer)) as url, httpx.Client(base_url=url, headers=AUTH) as a:
        live = {"dim": DIM, "metric": "cosine", "model_version": 1}
        assert a.put("/v1/indexes/items", json=live).status_code == 201
        building = {"dim": DIM, "metric": "cosine", "model_version": 2, "serving": False}
        assert a.put("/v1/indexes/items", json=building).status_code == 201
        # PUT again, asking it to serve: an index that exists keeps its state.
        again = a.put("/v1/indexes/items", json={**building, "serving": True})
        assert again.status_code == 200 and again.json()["serving"] is False
        for i in range(20):
            producer.upsert(f"item-{i}", v[i], version=2)
        producer.flush()
        assert serving_states(a) == {1: True, 2: False}

        fresh = settings_for(tmp_path, bootstrap, topics, "fresh", partitions=ALL)
        with serving(create_app(fresh)) as url2, httpx.Client(base_url=url2, headers=AUTH) as b:
            wait_until("the replica took v2's deltas", lambda: listing(b).get(2) == 20)
            assert serving_states(b) == {1: True, 2: False}
            # Building answers look-ups (the rollout's user pass reads item vectors from it).
            assert len(stored(b, ["item-0", "item-1"], 2)) == 2

            promoted = a.post("/v1/indexes/items/promote", json={"model_version": 2})
            assert promoted.status_code == 200 and promoted.json()["serving"] is True
            wait_until(
                "the replica learnt of the promotion from index-declarations",
                lambda: serving_states(b) == {1: True, 2: True},
            )
        missing = a.post("/v1/indexes/items/promote", json={"model_version": 9})
        assert missing.status_code == 404, missing.text


def test_a_retired_version_stays_out_and_a_late_load_of_it_is_refused(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    """A retire holds a version back on every replica, then drops it; a bulk load of it that
    outlives the retire (a rollout rerun late) must not serve it again, on the node that
    dropped it or on a replica that learnt of the drop. A node's ``/healthz`` says which
    deltas it applied, which a rollout waits on."""
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(10, DIM, seed=7)
    # The nodes read snapshots below one import root, as on a shared disk.
    both = {"partitions": ALL, "import_root": tmp_path / "bulk"}
    peer = settings_for(tmp_path, bootstrap, topics, "peer", **both)
    replica = settings_for(tmp_path, bootstrap, topics, "replica", **both)
    builder = QueryNode(
        Settings(
            run_dir=tmp_path / "builder",
            query_node=QueryNodeSettings(data_dir=peer.snapshot_import_root()),
        )
    )
    builder.create_index("items", 2, DIM, "cosine")
    builder.upsert("items", [f"late-{i}" for i in range(5)], v[:5])
    [late] = builder.snapshot("items", 2, offsets={})
    with (
        serving(create_app(peer)) as url,
        serving(create_app(replica)) as url2,
        httpx.Client(base_url=url, headers=AUTH) as a,
        httpx.Client(base_url=url2, headers=AUTH) as b,
    ):
        for version in (1, 2):
            spec = {"dim": DIM, "metric": "cosine", "model_version": version}
            assert a.put("/v1/indexes/items", json=spec).status_code == 201
        for i in range(10):
            producer.upsert(f"item-{i}", v[i], version=2)
        producer.flush()
        ends = {f"{topics.deltas}:{p}": o + 1 for _, p, o in producer.sent}
        wait_until("both nodes took v2", lambda: listing(b).get(2) == 10 == listing(a).get(2))

        def applied(client: httpx.Client) -> dict[str, int]:
            return client.get("/healthz").json()["offsets"]

        wait_until(
            "healthz reports the applied offsets",
            lambda: all(applied(b).get(key, 0) >= end for key, end in ends.items()),
        )

        held = a.post("/v1/indexes/items/hold-back", json={"model_version": 2})
        assert held.status_code == 200 and held.json()["serving"] is False
        wait_until("the replica held v2 back too", lambda: serving_states(b) == {1: True, 2: False})
        missing = a.post("/v1/indexes/items/hold-back", json={"model_version": 9})
        assert missing.status_code == 404, missing.text

        assert a.delete("/v1/indexes/items", params={"model_version": 2}).status_code == 200
        wait_until("the replica dropped v2", lambda: serving_states(b) == {1: True})
        for client in (a, b):
            r = client.post("/v1/indexes/items/load", json={"path": str(late.path)})
            assert r.status_code == 409 and r.json()["error"] == "dropped", r.text
            assert "was dropped" in r.json()["detail"]
            assert serving_states(client) == {1: True}

        # Created again (a rollout of v2 anew): the snapshot loads, into a building index.
        building = {"dim": DIM, "metric": "cosine", "model_version": 2, "serving": False}
        assert a.put("/v1/indexes/items", json=building).status_code == 201
        wait_until("the replica created v2 anew", lambda: 2 in serving_states(b))
        r = b.post("/v1/indexes/items/load", json={"path": str(late.path)})
        assert r.status_code == 200, r.text
        assert serving_states(b) == {1: True, 2: False}
    assert records_on(bootstrap, topics.dead_letters) == 0

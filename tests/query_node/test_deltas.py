"""The `item-deltas` consumer on a real broker: apply, dead letters, offsets, shards, restarts
after a kill, and hot swaps of snapshots built elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from nrtrec.core.settings import QueryNodeSettings, Settings
from nrtrec.query_node import QueryNode, create_app
from nrtrec.query_node.deltas import DeltaConsumer, default_group
from tests.ann.helpers import random_vectors
from tests.conftest import free_port
from tests.query_node.helpers import serving, stop
from tests.query_node.kafka_helpers import (
    AUTH,
    DIM,
    PARTITIONS,
    TOKEN,
    WAIT_S,
    DeltaProducer,
    Topics,
    committed,
    dead_letters,
    nearest,
    running,
    settings_for,
)
from tests.waiting import wait_healthy, wait_until

pytestmark = pytest.mark.integration


# ---- apply ----------------------------------------------------------------------------------


def test_upserts_and_deletes_apply_to_the_index(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    # No partitions given: the node subscribes to the whole topic with its group.
    settings = settings_for(tmp_path, bootstrap, topics)
    node = QueryNode(settings)
    node.create_index("items", 1, DIM, "l2")
    registry = CollectorRegistry()
    producer = DeltaProducer(bootstrap, topics.deltas)
    vectors = random_vectors(31, DIM, seed=1)
    with running(DeltaConsumer(node, metrics_registry=registry)) as consumer:
        assert consumer.assigned == list(range(PARTITIONS))
        for i in range(30):
            producer.upsert(f"item-{i}", vectors[i], attributes={"odd": i % 2 == 1})
        producer.flush()
        index = node.index("items", 1)
        wait_until("30 items applied", lambda: index.count == 30)
        assert all(nearest(node, vectors[i]) == f"item-{i}" for i in range(30))
        _, odd = node.search("items", vectors[0], k=30, filter={"odd": True})
        assert {hit.id for hit in odd.hits} == {f"item-{i}" for i in range(1, 30, 2)}

        # An update moves item-0; deletes remove ten others; a delete of an unknown id is fine.
        producer.upsert("item-0", vectors[30])
        for i in range(10, 20):
            producer.delete(f"item-{i}")
        producer.delete("never-there")
        producer.flush()
        wait_until("deletes applied", lambda: index.count == 20)
        wait_until("update applied", lambda: nearest(node, vectors[30]) == "item-0")
        assert not any(f"item-{i}" in index for i in range(10, 20))
        assert all(nearest(node, vectors[i]) == f"item-{i}" for i in range(1, 10))

        # Offsets follow what was applied, per partition.
        total = len(producer.sent)
        wait_until(
            "offsets advanced",
            lambda: sum(node.offsets.get(f"{topics.deltas}:{p}", 0) for p in range(4)) == total,
        )
    sample = registry.get_sample_value
    assert sample("nrtrec_query_node_deltas_applied_total", {"op": "upsert"}) == 31
    assert sample("nrtrec_query_node_deltas_applied_total", {"op": "delete"}) == 11
    assert sample("nrtrec_query_node_delta_delay_seconds_count") == 42
    assert sample("nrtrec_query_node_delta_lag_seconds") is not None


def test_bad_records_become_dead_letters_and_later_ones_still_apply(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(tmp_path, bootstrap, topics, partitions=[0, 1, 2, 3])
    node = QueryNode(settings)
    node.create_index("items", 1, DIM, "l2")
    registry = CollectorRegistry()
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(3, DIM, seed=2)
    now = int(time.time() * 1000)

    def raw(item_id: str, vector: str, version: int = 1) -> bytes:
        return (
            f'{{"op":"upsert","item_id":"{item_id}","model_version":{version},'
            f'"vector":{vector},"source_ts":{now}}}'
        ).encode()

    good = [producer.upsert("good-1", v[0], partition=2)]
    bad = {
        producer.send(b"junk", b"{not json", partition=2): "Invalid JSON",
        producer.upsert("wrong-dim", [*v[1], 0.5], partition=2): "dimension 9",
        producer.send(b"nan", raw("nan", "[NaN" + ",1" * (DIM - 1) + "]"), partition=2): (
            "vector.0: Input should be a finite number"
        ),
        producer.upsert("v7", v[1], version=7, partition=2): (
            "unknown model_version 7 for index items"
        ),
        producer.send(b"other-key", raw("keyed", json.dumps([1.0] * DIM)), partition=2): (
            "key 'other-key' is not 'keyed@v1' (<item_id>@v<model_version>)"
        ),
        producer.send(b"huge@v1", raw("huge", "[1e39" + ",1" * (DIM - 1) + "]"), partition=2): (
            "overflows float32"
        ),
        producer.send(b"tombstone", None, partition=2): "no value",
    }
    good.append(producer.upsert("good-2", v[2], partition=2))
    with running(DeltaConsumer(node, metrics_registry=registry)):
        producer.flush()
        index = node.index("items", 1)
        wait_until("good records applied", lambda: "good-1" in index and "good-2" in index)
        assert index.count == 2
        assert nearest(node, v[2]) == "good-2"
        letters = dead_letters(bootstrap, topics.dead_letters, len(bad))
        last = producer.where(good[-1])
        wait_until("offsets advanced", lambda: node.offsets == {f"{topics.deltas}:2": last[1] + 1})

    assert len(letters) == len(bad), letters
    by_offset = {letter.offset: letter for letter in letters}
    for position, reason in bad.items():
        _, partition, offset = producer.sent[position]
        letter = by_offset[offset]
        assert partition == 2
        assert (letter.source_topic, letter.partition) == (topics.deltas, 2)
        assert reason in letter.error, (reason, letter.error)
    assert by_offset[producer.where(next(iter(bad)))[1]].payload == "{not json"
    sample = registry.get_sample_value
    assert sample("nrtrec_query_node_deltas_dead_lettered_total", {"reason": "invalid_record"}) == 3
    assert sample("nrtrec_query_node_deltas_dead_lettered_total", {"reason": "invalid_vector"}) == 2
    assert sample("nrtrec_query_node_deltas_applied_total", {"op": "upsert"}) == 2


def test_offsets_are_committed_only_after_apply(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(tmp_path, bootstrap, topics, partitions=[0, 1, 2, 3])
    group = settings.query_node.consumer_group
    assert group is not None
    node = QueryNode(settings)
    node.create_index("items", 1, DIM, "l2")
    entered, release = threading.Event(), threading.Event()
    apply = node.upsert

    def held_upsert(*args, **kwargs):
        entered.set()
        assert release.wait(WAIT_S)
        return apply(*args, **kwargs)

    node.upsert = held_upsert  # type: ignore[method-assign]
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(5, DIM, seed=3)
    positions = [producer.upsert(f"held-{i}", v[i], partition=1) for i in range(5)]
    with running(DeltaConsumer(node)):
        producer.flush()
        last_offset = producer.where(positions[-1])[1]
        assert entered.wait(WAIT_S), "the batch never reached the index"
        # Read, not applied: nothing committed, the node's offsets unchanged.
        assert committed(bootstrap, group, topics.deltas, 1) < 0
        assert node.offsets == {}
        release.set()
        wait_until(
            "offset committed after apply",
            lambda: committed(bootstrap, group, topics.deltas, 1) == last_offset + 1,
        )
        assert node.offsets == {f"{topics.deltas}:1": last_offset + 1}
        assert all(f"held-{i}" in node.index("items") for i in range(5))


def test_a_batch_whose_dead_letters_fail_is_read_again(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(tmp_path, bootstrap, topics, partitions=[0, 1, 2, 3])
    node = QueryNode(settings)
    node.create_index("items", 1, DIM, "l2")
    consumer = DeltaConsumer(node)
    send = consumer._send_dead_letters
    attempts = []

    def failing_once(dead) -> None:
        attempts.append(len(dead))
        if len(attempts) == 1:
            raise RuntimeError("the broker is away")
        send(dead)

    consumer._send_dead_letters = failing_once  # type: ignore[method-assign]
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(2, DIM, seed=8)
    producer.upsert("before", v[0], partition=3)
    producer.send(b"junk", b"junk", partition=3)
    last = producer.upsert("after", v[1], partition=3)
    with running(consumer):
        producer.flush()
        offset = producer.where(last)[1]
        wait_until(
            "the batch applied after a retry",
            lambda: node.offsets.get(f"{topics.deltas}:3") == offset + 1,
        )
        [letter] = dead_letters(bootstrap, topics.dead_letters, 1)
        # The failure was logged, not fatal: the same thread goes on.
        assert consumer.running
    assert len(attempts) >= 2
    assert letter.payload == "junk" and letter.offset == offset - 1
    assert "before" in node.index("items") and "after" in node.index("items")


@pytest.mark.parametrize("resume", ["earliest", "committed"])
def test_a_node_without_a_snapshot_replays_from_the_beginning_unless_told(
    tmp_path: Path, bootstrap: str, topics: Topics, resume: str
) -> None:
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(10, DIM, seed=9)
    for i in range(10):
        producer.upsert(f"old-{i}", v[i])
    producer.flush()
    group = f"test-{uuid.uuid4().hex[:8]}"
    first = QueryNode(
        settings_for(
            tmp_path, bootstrap, topics, "first", partitions=[0, 1, 2, 3], consumer_group=group
        )
    )
    first.create_index("items", 1, DIM, "l2")
    with running(DeltaConsumer(first)):
        wait_until("applied", lambda: first.index("items").count == 10)
        wait_until(
            "committed",
            lambda: (
                sum(max(0, committed(bootstrap, group, topics.deltas, p)) for p in range(4)) == 10
            ),
        )
    # Same group, but its index died with it: the committed offsets say nothing of this one.
    second = QueryNode(
        settings_for(
            tmp_path,
            bootstrap,
            topics,
            "second",
            partitions=[0, 1, 2, 3],
            consumer_group=group,
            resume_without_snapshot=resume,
        )
    )
    second.create_index("items", 1, DIM, "l2")
    with running(DeltaConsumer(second)):
        producer.upsert("new", v[0])
        producer.flush()
        wait_until("the new item applied", lambda: "new" in second.index("items"))
        expected = 11 if resume == "earliest" else 1
        wait_until(f"{expected} items", lambda: second.index("items").count == expected)


def test_each_shard_holds_only_its_partitions(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    shards = {}
    for name, partitions in (("shard-a", [0, 1]), ("shard-b", [2, 3])):
        settings = settings_for(
            tmp_path, bootstrap, topics, name, partitions=partitions, consumer_group=None
        )
        node = QueryNode(settings)
        node.create_index("items", 1, DIM, "l2")
        shards[name] = (set(partitions), node, DeltaConsumer(node))
    groups = {c.group_id for _, _, c in shards.values()}
    assert groups == {
        default_group(QueryNodeSettings(partitions=[0, 1])),
        default_group(QueryNodeSettings(partitions=[2, 3])),
    }
    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(40, DIM, seed=4)
    positions = {f"sharded-{i}": producer.upsert(f"sharded-{i}", v[i]) for i in range(40)}
    producer.flush()
    partition_of = {item: producer.where(pos)[0] for item, pos in positions.items()}
    assert len(set(partition_of.values())) > 1, "the partitioner put every key in one partition"

    consumers = [running(c) for _, _, c in shards.values()]
    with consumers[0], consumers[1]:

        def applied() -> int:
            return sum(node.index("items").count for _, node, _ in shards.values())

        wait_until("all 40 items applied", lambda: applied() == 40)
    for owned, node, _ in shards.values():
        index = node.index("items")
        mine = {item for item, p in partition_of.items() if p in owned}
        assert {item for item in positions if item in index} == mine


# ---- snapshots, restarts, hot swaps ---------------------------------------------------------


def _newest_snapshots(data_dir: Path) -> list[dict]:
    home = data_dir / "items" / "1"
    if not home.is_dir():
        return []
    metas = []
    for folder in sorted(home.iterdir(), reverse=True):
        if folder.name.startswith(".") or not (folder / "meta.json").is_file():
            continue
        meta = json.loads((folder / "meta.json").read_text())
        metas.append({**meta, "path": folder})
    return metas


def _search_top(client: httpx.Client, vector: np.ndarray) -> str | None:
    r = client.post("/v1/indexes/items/search", json={"vector": vector.tolist(), "k": 1})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    return items[0]["id"] if items else None


def _count(client: httpx.Client) -> int:
    return sum(i["count"] for i in client.get("/v1/indexes").json() if i["name"] == "items")


def test_a_killed_node_restarts_from_its_snapshot_and_replays_the_rest(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    nrtrec = Path(sys.executable).with_name("nrtrec")
    command = [str(nrtrec), "query-node", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--token", TOKEN, "--kafka", bootstrap]
    command += ["--partitions", "0,1,2,3", "--group", f"test-{uuid.uuid4().hex[:8]}"]
    env = {
        **os.environ,
        "NRTREC_RUN_DIR": str(tmp_path / "run"),
        "NRTREC_TOPICS__ITEM_DELTAS": topics.deltas,
        "NRTREC_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "NRTREC_TOPICS__INDEX_DECLARATIONS": topics.declarations,
        "NRTREC_QUERY_NODE__SNAPSHOT_INTERVAL_S": "1",
    }
    base = f"http://127.0.0.1:{port}"
    logs = []

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"query-node-{len(logs)}.log", "wb")  # noqa: SIM115
        logs.append(log)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_healthy(f"{base}/healthz", process)
        return process

    def output() -> str:
        return "\n".join(Path(log.name).read_text() for log in logs)

    producer = DeltaProducer(bootstrap, topics.deltas)
    v = random_vectors(61, DIM, seed=5)
    process = start()
    try:
        client = httpx.Client(base_url=base, headers=AUTH, timeout=10)
        spec = {"dim": DIM, "metric": "l2", "model_version": 1}
        assert client.put("/v1/indexes/items", json=spec).status_code == 201
        for i in range(30):
            producer.upsert(f"kept-{i}", v[i])
        producer.flush()
        wait_until("batch 1 applied", lambda: _count(client) == 30)
        # The periodic snapshot that holds batch 1 and says so in its offsets.
        wait_until(
            "a snapshot of batch 1",
            lambda: any(sum(m["offsets"].values()) == 30 for m in _newest_snapshots(data_dir)),
        )
        [first] = [m for m in _newest_snapshots(data_dir) if sum(m["offsets"].values()) == 30]
        assert first["count"] == 30
        # Batch 2: new items, deletes of snapshotted ones, an update of one.
        for i in range(30, 50):
            producer.upsert(f"kept-{i}", v[i])
        for i in range(10):
            producer.delete(f"kept-{i}")
        producer.upsert("kept-10", v[60])
        producer.flush()
        wait_until("batch 2 applied", lambda: _count(client) == 40)
        wait_until("update applied", lambda: _search_top(client, v[60]) == "kept-10")
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # As if killed before batch 2 reached any snapshot: only the first one stays.
    for meta in _newest_snapshots(data_dir):
        if meta["snapshot_id"] > first["snapshot_id"]:
            for f in meta["path"].iterdir():
                f.unlink()
            meta["path"].rmdir()

    process = start()
    try:
        client = httpx.Client(base_url=base, headers=AUTH, timeout=10)
        wait_until("batch 2 replayed", lambda: _count(client) == 40)
        wait_until("update replayed", lambda: _search_top(client, v[60]) == "kept-10")
        for i in range(10):
            assert _search_top(client, v[i]) != f"kept-{i}", f"kept-{i} is deleted"
        for i in range(11, 50):
            assert _search_top(client, v[i]) == f"kept-{i}"
        client.close()
    finally:
        stop(process)
        for log in logs:
            log.close()
    assert process.returncode == 0, output()
    assert "item-deltas: assigned 0@" in output(), output()


def test_hot_swap_serves_a_snapshot_built_elsewhere_and_replays_from_its_offsets(
    tmp_path: Path, bootstrap: str, topics: Topics
) -> None:
    settings = settings_for(tmp_path, bootstrap, topics, partitions=[0, 1, 2, 3])
    # Snapshots load only from below this folder.
    settings.query_node.import_root = tmp_path / "backfill"
    producer = DeltaProducer(bootstrap, topics.deltas)
    live = random_vectors(12, DIM, seed=6)
    backfilled = random_vectors(200, DIM, seed=7)
    with serving(create_app(settings)) as base, httpx.Client(base_url=base, timeout=10) as client:
        client.headers.update(AUTH)
        spec = {"dim": DIM, "metric": "l2", "model_version": 1}
        assert client.put("/v1/indexes/items", json=spec).status_code == 201
        for i in range(12):
            producer.upsert(f"live-{i}", live[i])
        producer.flush()
        wait_until("live deltas applied", lambda: _count(client) == 12)

        # The bulk backfill: an index built and saved by another process, from offset 0.
        builder = QueryNode(
            Settings(
                run_dir=tmp_path / "builder",
                query_node=QueryNodeSettings(data_dir=tmp_path / "backfill"),
            )
        )
        builder.create_index("items", 1, DIM, "l2")
        builder.upsert("items", [f"backfill-{i}" for i in range(200)], backfilled)
        [built] = builder.snapshot(
            "items", 1, offsets={f"{topics.deltas}:{p}": 0 for p in range(PARTITIONS)}
        )

        statuses: list[int] = []
        stop = threading.Event()

        def search_loop() -> None:
            with httpx.Client(base_url=base, timeout=10) as searcher:
                i = 0
                while not stop.is_set():
                    vector = (backfilled if i % 2 else live)[i % 12].tolist()
                    r = searcher.post("/v1/indexes/items/search", json={"vector": vector, "k": 5})
                    statuses.append(r.status_code)
                    i += 1

        searcher = threading.Thread(target=search_loop)
        searcher.start()
        try:
            time.sleep(0.3)
            r = client.post("/v1/indexes/items/load", json={"path": str(built.path)})
            assert r.status_code == 200, r.text
            [loaded] = r.json()["loaded"]
            assert (loaded["name"], loaded["model_version"], loaded["count"]) == ("items", 1, 200)
            assert loaded["offsets"] == {f"{topics.deltas}:{p}": 0 for p in range(PARTITIONS)}
            assert _search_top(client, backfilled[17]) == "backfill-17"
            # The consumer went back to the snapshot's offsets: the live items apply again.
            wait_until("deltas replayed onto the new index", lambda: _count(client) == 212)
            time.sleep(0.3)
        finally:
            stop.set()
            searcher.join(30)
        assert len(statuses) > 10 and set(statuses) == {200}, set(statuses)
        assert all(_search_top(client, live[i]) == f"live-{i}" for i in range(12))
        metrics = client.get("/metrics").text
        assert 'nrtrec_query_node_deltas_applied_total{op="upsert"}' in metrics
        assert "nrtrec_query_node_delta_consumer_lag{" in metrics

        # By folder of a snapshot store too; mistakes are the caller's, and it needs the token.
        r = client.post("/v1/indexes/items/load", json={"snapshot_dir": str(tmp_path / "backfill")})
        assert r.status_code == 200, r.text
        assert (
            client.post(
                "/v1/indexes/items/load", json={"path": str(tmp_path / "backfill" / "no")}
            ).json()["error"]
            == "not_found"
        )
        r = client.post("/v1/indexes/other/load", json={"path": str(built.path)})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_snapshot")
        r = client.post("/v1/indexes/items/load", json={"path": "a", "snapshot_dir": "b"})
        assert r.status_code == 422
        r = httpx.post(f"{base}/v1/indexes/items/load", json={"path": str(built.path)})
        assert r.status_code == 401
        # Nothing outside the import root, by "..", by an absolute path or through a link.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "backfill" / "link").symlink_to(elsewhere)
        for path in (
            tmp_path / "backfill" / ".." / "node",
            elsewhere,
            tmp_path / "backfill" / "link",
            "relative/path",
        ):
            r = client.post("/v1/indexes/items/load", json={"path": str(path)})
            assert (r.status_code, r.json()["error"]) == (403, "outside_import_root"), r.text
        wait_until("replayed again", lambda: _count(client) == 212)

    # Saved into the node's own data dir: a restart serves the swapped-in index.
    restarted = QueryNode(settings)
    restarted.restore()
    assert restarted.index("items", 1).count == 212

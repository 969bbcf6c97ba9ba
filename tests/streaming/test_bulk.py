"""The bulk backfill on a real broker with real encoders: the catalogue folded to its latest
state, encoded, sharded like Kafka's partitioner, snapshotted with the offsets delta mode goes
on from, and hot-swapped into real query nodes.

Each test has topics of its own (4 partitions, like the contract topics), so no other test's
records reach it. The encoders are the session's trained versions 1 and 2, run in-process.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from nrtrec.ann.snapshots import SnapshotStore
from nrtrec.cli import app as cli_app
from nrtrec.core.kafka import DeadLetterProducer
from nrtrec.core.settings import (
    GatewaySettings,
    InferenceSettings,
    KafkaSettings,
    LocalRunnerSettings,
    QueryNodeSettings,
    Settings,
    TopicSettings,
)
from nrtrec.inference.client import LocalEncoder
from nrtrec.query_node import create_app
from nrtrec.schemas import DeadLetter, ItemDelta, ListingEvent, ListingOp, decode, encode
from nrtrec.schemas.partitioning import PRODUCER_CONFIG, ShardMap, partition_for
from nrtrec.streaming.attributes import listing_attributes
from nrtrec.streaming.bulk import (
    BulkError,
    high_watermarks,
    load_snapshots,
    read_catalogue,
    read_listings_offsets,
    read_manifest,
    run_bulk,
    shard_layout,
)
from tests.conftest import free_port
from tests.models import TrainedModels
from tests.query_node.helpers import serving
from tests.stack import Stack
from tests.waiting import collect, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
SHARDS = 2
TOKEN = "test-token"
# Generous: two cores shared with other work; nothing here asserts speed.
WAIT_S = 30.0


# ---- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    listings: str
    item_deltas: str
    dead_letters: str
    declarations: str


@pytest.fixture(scope="module")
def bootstrap(stack: Stack) -> str:
    return stack.kafka()


@pytest.fixture
def topics(bootstrap: str) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    t = Topics(
        f"test-listings-{suffix}",
        f"test-deltas-{suffix}",
        f"test-dead-{suffix}",
        f"test-declarations-{suffix}",
    )
    # Kept referenced until the futures resolve: a collected client fails them with _DESTROY.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)
            for name in vars(t).values()
        ]
    )
    for future in futures.values():
        future.result(15)

    # The controller acknowledges a new topic before the broker serves its metadata.
    def served() -> bool:
        listed = admin.list_topics(timeout=5).topics
        return all(n in listed and listed[n].error is None for n in vars(t).values())

    wait_until("the test's topics are served", served)
    return t


def bulk_settings(
    tmp_path: Path,
    bootstrap: str,
    topics: Topics,
    models: TrainedModels,
    **groups: object,
) -> Settings:
    host, port = bootstrap.rsplit(":", 1)
    values: dict[str, object] = {
        "run_dir": tmp_path / "run",
        "token": TOKEN,
        "kafka": KafkaSettings(host=host, port=int(port), partitions=PARTITIONS),
        "inference": InferenceSettings(backend="local", repository=models.repository.path),
        "topics": TopicSettings(
            listings=topics.listings,
            item_deltas=topics.item_deltas,
            dead_letters=topics.dead_letters,
            index_declarations=topics.declarations,
        ),
        "local": LocalRunnerSettings(query_node_shards=SHARDS, query_node_replicas=1),
        **groups,
    }
    return Settings(**values)


class Records:
    """Produces keyed records like nrtrec's producers and reports where each landed."""

    def __init__(self, bootstrap: str):
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, **PRODUCER_CONFIG}
        )
        self.sent: list[tuple[int, int] | None] = []
        self.errors: list[KafkaError] = []

    def send(self, topic: str, key: str, value: bytes, partition: int | None = None) -> int:
        position = len(self.sent)
        self.sent.append(None)

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.errors.append(error)
            else:
                self.sent[position] = (message.partition(), message.offset())

        where = {} if partition is None else {"partition": partition}
        self.producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered, **where)
        return position

    def send_delta(self, topic: str, delta: ItemDelta) -> int:
        """As every producer of item-deltas does: keyed by item and version, on its partition."""
        return self.send(topic, delta.key(), encode(delta), delta.partition(PARTITIONS))

    def flush(self) -> None:
        assert self.producer.flush(15) == 0
        assert self.errors == []

    def where(self, position: int) -> tuple[int, int]:
        landed = self.sent[position]
        assert landed is not None
        return landed


_ts = iter(range(1_700_000_000_000, 1_800_000_000_000))


def listing(item_id: str, title: str | None = None, **fields: object) -> ListingEvent:
    values: dict[str, object] = {
        "title": title or f"Film {item_id}",
        "category": "Drama",
        "aspects": {"genres": ["Drama", "Comedy"], "year": 1995},
        "price": 9.5,
        "location": "US",
        **fields,
    }
    return ListingEvent(
        event_id=f"e-{uuid.uuid4().hex[:12]}",
        op=ListingOp.UPSERT,
        item_id=item_id,
        ts=next(_ts),
        **values,
    )


def deletion(item_id: str) -> ListingEvent:
    return ListingEvent(
        event_id=f"e-{uuid.uuid4().hex[:12]}", op=ListingOp.DELETE, item_id=item_id, ts=next(_ts)
    )


def watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def read_from(bootstrap: str, topic: str, offsets: dict[int, int], n: int) -> list[Message]:
    """``n`` records of ``topic`` read from ``offsets`` (partition -> offset)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}"}
    )
    consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
    try:
        return collect(consumer, lambda got: len(got) >= n, WAIT_S)
    finally:
        consumer.close()


def catalogue(records: Records, topics: Topics) -> tuple[dict[str, ListingEvent], dict[int, str]]:
    """Twelve items, one updated, one deleted, one deleted and listed again, and three records
    that cannot be applied; returns the live items' latest listings, and the position of each
    rejected record with a word its dead letter's reason must hold."""
    latest: dict[str, ListingEvent] = {}
    for i in range(12):
        item = listing(f"item-{i}", category=["Drama", "Comedy", "Action"][i % 3])
        latest[item.item_id] = item
        records.send(topics.listings, item.item_id, encode(item))
    # No year, no genres, no location: those attributes are left out.
    plain = listing("plain", aspects={}, location=None)
    latest["plain"] = plain
    records.send(topics.listings, "plain", encode(plain))
    updated = listing("item-3", "Film item-3, the director's cut", price=19.0)
    latest["item-3"] = updated
    records.send(topics.listings, "item-3", encode(updated))
    del latest["item-5"]
    records.send(topics.listings, "item-5", encode(deletion("item-5")))
    records.send(topics.listings, "item-7", encode(deletion("item-7")))
    relisted = listing("item-7", "Film item-7 again")
    latest["item-7"] = relisted
    records.send(topics.listings, "item-7", encode(relisted))
    # Each leaves its item as it was: an upsert without a title (invalid), one keyed by another
    # item (its order against item-9's changes is unknown), one with a blank title.
    rejected = {
        records.send(
            topics.listings, "item-8", b'{"event_id":"x","op":"upsert","item_id":"item-8","ts":1}'
        ): "title",
        records.send(topics.listings, "item-10", encode(listing("item-9", "Other"))): "key",
        records.send(topics.listings, "item-11", encode(listing("item-11", "   "))): "encoded",
    }
    records.flush()
    return latest, rejected


# ---- the catalogue, sharded and snapshotted --------------------------------------------------


def test_bulk_builds_one_snapshot_per_shard_of_exactly_the_live_items(
    tmp_path: Path, bootstrap: str, topics: Topics, trained_models: TrainedModels
) -> None:
    settings = bulk_settings(tmp_path, bootstrap, topics, trained_models)
    records = Records(bootstrap)
    latest, rejected = catalogue(records, topics)
    # Deltas already on item-deltas (from an earlier delta run): the snapshots start past them.
    for i in range(5):
        records.send(topics.item_deltas, f"old-{i}", b"{}")
    records.flush()
    listing_marks = watermarks(bootstrap, topics.listings)
    delta_marks = watermarks(bootstrap, topics.item_deltas)

    progress: list[tuple[str, int, int]] = []
    out_dir = tmp_path / "bulk"
    manifest = run_bulk(settings, out_dir, progress=lambda *a: progress.append(a))

    # What it read and where it stopped: exactly the high watermarks.
    assert manifest.model_version == 2  # the newest
    assert (manifest.items, manifest.deleted, manifest.dead_letters) == (len(latest), 1, 3)
    assert manifest.listings_offsets == listing_marks
    assert manifest.item_deltas_offsets == delta_marks
    assert (manifest.listings_topic, manifest.item_deltas_topic) == (
        topics.listings,
        topics.item_deltas,
    )
    assert read_manifest(out_dir / "bulk.json") == manifest
    assert read_listings_offsets(out_dir / "bulk.json") == listing_marks
    assert {stage for stage, _, _ in progress} == {
        "reading listings",
        "encoding",
        "building indexes",
    }
    assert ("encoding", len(latest), len(latest)) in progress

    # One snapshot per shard; the shards' items are the live items, each on the shard that owns
    # its item-deltas partition under Kafka's partitioner.
    shard_map = ShardMap.of(SHARDS, PARTITIONS)
    encoder = LocalEncoder(settings.inference, trained_models.repository)
    expected = encoder.encode_listings(list(latest.values()), 2).vectors
    expected_of = dict(zip(latest, expected, strict=True))
    seen: dict[str, int] = {}
    assert [s.shard for s in manifest.shards] == list(range(SHARDS))
    for shard in manifest.shards:
        assert tuple(shard.partitions) == shard_map.partitions_of(shard.shard)
        path = Path(shard.snapshot_path)
        assert path.is_relative_to(out_dir.resolve() / f"shard-{shard.shard}")
        index, snapshot = SnapshotStore(path.parent).load_path(path)
        assert (index.name, index.model_version, index.metric.value) == ("items", 2, "cosine")
        assert index.dim == expected.shape[1] == settings.inference.dim
        assert snapshot.offsets == {
            f"{topics.item_deltas}:{p}": delta_marks[p] for p in shard.partitions
        }
        ids = [item.id for item in index.items(list(latest))]
        assert shard.count == snapshot.count == index.count == len(ids)
        for item_id in ids:
            assert partition_for(item_id, PARTITIONS) in shard.partitions
            assert item_id not in seen
            seen[item_id] = shard.shard
            stored = index.vector(item_id)
            assert stored is not None
            np.testing.assert_allclose(stored, expected_of[item_id], atol=1e-5)
            assert index.attributes(item_id) == listing_attributes(latest[item_id])
        # The index searches: each item is its own nearest neighbour.
        for item_id in ids:
            result = index.search(expected_of[item_id], k=1)
            assert result.hits[0].id == item_id
    assert set(seen) == set(latest)
    assert set(seen.values()) == set(range(SHARDS)), "the test's items should span both shards"

    # The attribute mapping, spelled out once.
    with_all = SnapshotStore(Path(manifest.shards[seen["item-3"]].snapshot_path).parent)
    index, _ = with_all.load_path(Path(manifest.shards[seen["item-3"]].snapshot_path))
    assert index.attributes("item-3") == {
        "title": "Film item-3, the director's cut",
        "category": "Drama",
        "price": 19.0,
        "location": "US",
        "year": 1995,
        "genres": ["Drama", "Comedy"],
    }
    plain_shard = manifest.shards[seen["plain"]]
    index, _ = SnapshotStore(Path(plain_shard.snapshot_path).parent).load_path(
        Path(plain_shard.snapshot_path)
    )
    assert index.attributes("plain") == {
        "title": "Film plain",
        "category": "Drama",
        "price": 9.5,
    }

    # Each rejected record is a dead letter with its reason and place.
    letters = [
        decode(DeadLetter, m.value())
        for m in read_from(bootstrap, topics.dead_letters, dict.fromkeys(range(PARTITIONS), 0), 3)
    ]
    by_place = {(x.source_topic, x.partition, x.offset): x for x in letters}
    assert len(by_place) == 3
    for position, word in rejected.items():
        letter = by_place[(topics.listings, *records.where(position))]
        assert word in letter.error, letter.error
        assert '"item_id":"item-' in letter.payload  # the record as it was

    # A listing produced after the run is not in the snapshots; it lies at or past the offset
    # the run recorded, so delta mode, starting there, reads it.
    late = listing("late-item")
    position = records.send(topics.listings, "late-item", encode(late))
    records.flush()
    partition, offset = records.where(position)
    assert offset >= manifest.listings_offsets[partition]
    assert "late-item" not in seen
    [first] = read_from(bootstrap, topics.listings, read_listings_offsets(out_dir), 1)
    assert decode(ListingEvent, first.value()) == late


def test_bulk_with_an_older_version_on_the_command_line(
    tmp_path: Path, bootstrap: str, topics: Topics, trained_models: TrainedModels
) -> None:
    records = Records(bootstrap)
    items = [listing(f"cli-{i}", category="Comedy") for i in range(6)]
    for item in items:
        records.send(topics.listings, item.item_id, encode(item))
    records.flush()
    host, port = bootstrap.rsplit(":", 1)
    env = {
        "NRTREC_RUN_DIR": str(tmp_path / "run"),
        "NRTREC_KAFKA__HOST": host,
        "NRTREC_KAFKA__PORT": port,
        "NRTREC_KAFKA__PARTITIONS": str(PARTITIONS),
        "NRTREC_LOCAL__QUERY_NODE_SHARDS": str(SHARDS),
        "NRTREC_INFERENCE__BACKEND": "local",
        "NRTREC_INFERENCE__REPOSITORY": str(trained_models.repository.path),
        "NRTREC_TOPICS__LISTINGS": topics.listings,
        "NRTREC_TOPICS__ITEM_DELTAS": topics.item_deltas,
        "NRTREC_TOPICS__DEAD_LETTERS": topics.dead_letters,
    }
    result = CliRunner().invoke(cli_app, ["bulk", "--version", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "run" / "bulk")  # the default out dir
    assert json.loads(result.stdout.strip().splitlines()[-1]) == json.loads(
        manifest.model_dump_json()
    )
    assert (manifest.model_version, manifest.items) == (1, 6)
    assert sum(s.count for s in manifest.shards) == 6

    settings = InferenceSettings(backend="local", repository=trained_models.repository.path)
    v1 = LocalEncoder(settings, trained_models.repository).encode_listings(items, 1).vectors
    for shard in manifest.shards:
        index, _ = SnapshotStore(Path(shard.snapshot_path).parent).load_path(
            Path(shard.snapshot_path)
        )
        for stored in index.items([x.item_id for x in items]):
            row = [x.item_id for x in items].index(stored.id)
            np.testing.assert_allclose(stored.vector, v1[row], atol=1e-5)

    # A version that is not registered, and a topic that is not there, fail with the reason.
    result = CliRunner().invoke(cli_app, ["bulk", "--version", "9"], env=env)
    assert result.exit_code == 1
    assert "model version 9 is not available" in result.output
    env["NRTREC_TOPICS__LISTINGS"] = f"missing-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(cli_app, ["bulk"], env=env)
    assert result.exit_code == 1
    assert "is not there" in result.output


def test_reading_stops_exactly_at_the_marks_while_listings_keep_coming(
    bootstrap: str, topics: Topics
) -> None:
    records = Records(bootstrap)
    before = [listing(f"mark-{i}") for i in range(8)]
    for item in before:
        records.send(topics.listings, item.item_id, encode(item))
    records.flush()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
        }
    )
    try:
        marks = high_watermarks(consumer, topics.listings)
        # Past the marks: an update, a delete and a new item, none of which may be read.
        for event in (listing("mark-1", "changed"), deletion("mark-2"), listing("after")):
            records.send(topics.listings, event.item_id, encode(event))
        records.flush()
        dead = DeadLetterProducer(bootstrap, topics.dead_letters, "test-bulk")
        read = read_catalogue(consumer, topics.listings, marks, dead)
        dead.flush()
    finally:
        consumer.close()
    assert read.live == {item.item_id: item for item in before}
    assert (read.records, read.deleted, read.dead_letters, dead.sent) == (8, set(), 0, 0)


def test_an_empty_catalogue_still_gives_every_shard_a_snapshot(
    tmp_path: Path, bootstrap: str, topics: Topics, trained_models: TrainedModels
) -> None:
    settings = bulk_settings(tmp_path, bootstrap, topics, trained_models)
    manifest = run_bulk(settings, tmp_path / "bulk")
    assert (manifest.items, manifest.deleted) == (0, 0)
    assert manifest.listings_offsets == dict.fromkeys(range(PARTITIONS), 0)
    assert [s.count for s in manifest.shards] == [0] * SHARDS
    for shard in manifest.shards:
        index, snapshot = SnapshotStore(Path(shard.snapshot_path).parent).load_path(
            Path(shard.snapshot_path)
        )
        assert index.count == 0 and index.dim == settings.inference.dim
        assert snapshot.offsets == {f"{topics.item_deltas}:{p}": 0 for p in shard.partitions}


def test_a_shard_map_that_disagrees_with_the_topic_is_refused(
    tmp_path: Path, bootstrap: str, topics: Topics, trained_models: TrainedModels
) -> None:
    settings = bulk_settings(tmp_path, bootstrap, topics, trained_models)
    wrong = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"partitions": 8})}
    )
    with pytest.raises(BulkError, match="has 4 partitions but the shard map is for 8"):
        run_bulk(wrong, tmp_path / "bulk")


# ---- hot swap into real query nodes ---------------------------------------------------------


def test_load_swaps_the_snapshots_into_the_shards_nodes_and_deltas_continue(
    tmp_path: Path, bootstrap: str, topics: Topics, trained_models: TrainedModels
) -> None:
    records = Records(bootstrap)
    latest, _ = catalogue(records, topics)
    shard_map = ShardMap.of(SHARDS, PARTITIONS)

    def node_settings(shard: int) -> Settings:
        qn = QueryNodeSettings(
            data_dir=tmp_path / f"node-{shard}",
            consume_deltas=True,
            kafka_bootstrap=bootstrap,
            partitions=list(shard_map.partitions_of(shard)),
            consumer_group=f"test-{uuid.uuid4().hex[:8]}",
            # Where the bulk run below writes: the only folder a node loads snapshots from.
            import_root=tmp_path / "bulk",
        )
        names = TopicSettings(
            item_deltas=topics.item_deltas,
            dead_letters=topics.dead_letters,
            index_declarations=topics.declarations,
        )
        return Settings(
            run_dir=tmp_path / f"node-{shard}-run", token=TOKEN, query_node=qn, topics=names
        )

    with (
        serving(create_app(node_settings(0))) as url0,
        serving(create_app(node_settings(1))) as url1,
    ):
        urls = [url0, url1]
        settings = bulk_settings(
            tmp_path,
            bootstrap,
            topics,
            trained_models,
            gateway=GatewaySettings(shards=[[url0], [url1]]),
        )
        manifest = run_bulk(settings, tmp_path / "bulk")
        loaded = load_snapshots(settings, manifest)
        assert [(n.shard, n.url) for n in loaded] == [(0, url0), (1, url1)]
        assert [n.count for n in loaded] == [s.count for s in manifest.shards]

        encoder = LocalEncoder(settings.inference, trained_models.repository)
        vectors = dict(
            zip(latest, encoder.encode_listings(list(latest.values()), 2).vectors, strict=True)
        )
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            for shard, url in enumerate(urls):
                [index] = client.get(f"{url}/v1/indexes").json()
                assert (index["name"], index["model_version"], index["metric"]) == (
                    "items",
                    2,
                    "cosine",
                )
                assert index["count"] == manifest.shards[shard].count
            for item_id in ("item-3", "item-7", "plain"):
                url = urls[shard_map.shard_for(item_id)]
                r = client.post(
                    f"{url}/v1/indexes/items/search",
                    json={"vector": vectors[item_id].tolist(), "k": 1},
                )
                assert r.status_code == 200, r.text
                assert r.json()["items"][0]["id"] == item_id
                assert r.json()["model_version"] == 2

            # Delta mode goes on: a delta produced now applies on top of the swapped-in index.
            fresh = listing("fresh-item", "A brand new listing")
            [fresh_vector] = encoder.encode_listings([fresh], 2).vectors
            delta = ItemDelta(
                op=ListingOp.UPSERT,
                item_id="fresh-item",
                model_version=2,
                vector=fresh_vector.tolist(),
                attributes=listing_attributes(fresh),
                source_ts=fresh.ts,
            )
            records.send_delta(topics.item_deltas, delta)
            records.flush()
            url = urls[shard_map.shard_for("fresh-item")]

            def found() -> bool:
                r = client.post(
                    f"{url}/v1/indexes/items/search",
                    json={"vector": fresh_vector.tolist(), "k": 1},
                )
                return [hit["id"] for hit in r.json()["items"]] == ["fresh-item"]

            wait_until("the delta applied on the swapped-in index", found)

            # A node that is not up is named, after the others were tried.
            dead = f"http://127.0.0.1:{free_port()}"
            with pytest.raises(BulkError, match=f"shard 1 at {dead}"):
                load_snapshots(settings, manifest, urls=[[url0], [url1, dead]])


def test_the_shards_are_the_gateways_when_configured_else_the_local_runners() -> None:
    local = shard_layout(
        Settings(
            local=LocalRunnerSettings(query_node_shards=2, query_node_replicas=1),
            kafka=KafkaSettings(partitions=4),
        )
    )
    assert local.urls == [["http://127.0.0.1:8100"], ["http://127.0.0.1:8101"]]
    assert local.shard_map.partitions == ((0, 2), (1, 3))
    gateway = GatewaySettings(
        shards=[["http://a:1", "http://b:1"], ["http://c:1"], ["http://d:1"]],
        num_partitions=6,
        shard_partitions=[[0, 1], [2, 3], [4, 5]],
    )
    configured = shard_layout(Settings(gateway=gateway))
    assert configured.urls == gateway.shards
    assert configured.shard_map.partitions == ((0, 1), (2, 3), (4, 5))
    with pytest.raises(BulkError, match="shard map"):
        shard_layout(Settings(gateway=gateway.model_copy(update={"shard_partitions": [[0]]})))

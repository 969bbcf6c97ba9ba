"""The bulk backfill: the whole catalogue embedded in one batch, one index snapshot per shard.

Delta mode (the item-embedding streaming job, ``listings`` → ``item-deltas`` → query nodes)
keeps an index fresh; BULK mode builds it from scratch, for a new encoder version or a new
deployment, and hands it to the query nodes, which swap it in without stopping searches. The
two meet at Kafka offsets, so no listing change between them is lost:

1. Record where things end: the high watermarks of ``item-deltas`` first, then of
   ``listings``. In that order, every delta before the ``item-deltas`` marks was made from a
   listing before the ``listings`` marks, whichever streaming job ran meanwhile.
2. Read ``listings`` from its beginning up to exactly its marks and fold it into each item's
   latest state: an upsert replaces, a delete removes, in offset order within a partition (the
   key is the item id, so all of an item's changes are on one partition). A record that is not
   a valid listing, whose key is not its item id, or that cannot be encoded becomes a dead
   letter with the reason, and the item keeps its state from before it.
3. Encode the live listings with one encoder version (``encode_listings``).
4. Put each item on the shard that owns its ``item-deltas`` partition (Kafka's murmur2
   partitioner, ``schemas.partitioning``), build one cosine ``VectorIndex`` per shard and save
   it as a snapshot whose offsets are the ``item-deltas`` marks of that shard's partitions.
5. Optionally POST each snapshot to its shard's query nodes (``/v1/indexes/items/load``): a
   node serves it and replays ``item-deltas`` from its offsets.

``<out_dir>/bulk.json`` (``BulkManifest``) records all of it; the item-embedding job starts
its ``listings`` source at ``read_listings_offsets(<out_dir>/bulk.json)``, where this read
stopped, so its deltas land after the snapshots' ``item-deltas`` offsets.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, Field

from nrtrec.inference.client import open_encoder
from nrtrec.inference.errors import BadEncoderInput
from nrtrec.inference.text import listing_text
from nrtrec.query_node.deltas import offset_key
from nrtrec.query_node.index import IndexSpec, VectorIndex
from nrtrec.query_node.snapshots import SnapshotStore
from nrtrec.schemas import (
    DeadLetter,
    InvalidRecord,
    ListingEvent,
    ListingOp,
    Topic,
    decode,
    encode,
    payload_text,
)
from nrtrec.schemas.partitioning import PRODUCER_CONFIG, ShardMap
from nrtrec.schemas.query_api import Metric
from nrtrec.settings import Settings
from nrtrec.streaming.attributes import listing_attributes

log = logging.getLogger(__name__)

MANIFEST = "bulk.json"
METADATA_TIMEOUT_S = 15.0
# Reading stops with an error when no record arrives for this long before every mark is
# reached: the broker went away, or the marks lie past data that retention has deleted.
STALL_TIMEOUT_S = 60.0
POLL_BATCH = 1000
READING, ENCODING, BUILDING = "reading listings", "encoding", "building indexes"
# Errors of a partition between leaders, or of a broker that is (re)starting; the Python
# client does not flag every one of them retriable.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}

#: ``progress(stage, done, total)``: called as each stage advances (``total`` may grow while
#: reading, since a partition's first offset is only an estimate of its record count).
ProgressCallback = Callable[[str, int, int], None]


class BulkError(Exception):
    """The backfill cannot go on; the message says what to fix."""


# ---- what crosses the process boundary: bulk.json ----------------------------------------------


class BulkShard(BaseModel):
    shard: int
    partitions: list[int]
    snapshot_path: str
    count: int


class BulkManifest(BaseModel):
    """``<out_dir>/bulk.json``: what a bulk run built and where delta mode continues from."""

    model_version: int
    index_name: str
    items: int = Field(description="live items, in the snapshots")
    deleted: int = Field(description="items whose last change was a delete")
    dead_letters: int = Field(default=0, description="listings sent to dead-letters")
    listings_topic: str
    # partition -> the offset reading stopped at (exclusive): the streaming job starts there.
    listings_offsets: dict[int, int]
    item_deltas_topic: str
    # partition -> high watermark when the run began: the snapshots' offsets.
    item_deltas_offsets: dict[int, int]
    shards: list[BulkShard]
    created: str
    seconds: float


def read_manifest(path: Path | str) -> BulkManifest:
    """A ``bulk.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        return BulkManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BulkError(f"no bulk manifest at {path}; run `nrtrec bulk` first") from None
    except ValueError as e:
        raise BulkError(f"{path} is not a bulk manifest: {e}") from None


def read_listings_offsets(path: Path | str) -> dict[int, int]:
    """Partition → offset of ``listings`` where a bulk run stopped reading (exclusive): where
    the item-embedding job starts, so that it misses no listing and redoes none."""
    return dict(read_manifest(path).listings_offsets)


# ---- where things are -------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    listings: str
    item_deltas: str
    dead_letters: str

    @classmethod
    def of(cls, settings: Settings) -> Topics:
        s = settings.streaming
        return cls(
            listings=s.listings_topic or Topic.LISTINGS.value,
            item_deltas=s.item_deltas_topic or Topic.ITEM_DELTAS.value,
            dead_letters=s.dead_letters_topic or Topic.DEAD_LETTERS.value,
        )


@dataclass(frozen=True)
class ShardLayout:
    """Which shard owns which ``item-deltas`` partitions, and the query nodes of each shard."""

    shard_map: ShardMap
    urls: list[list[str]]


def shard_layout(settings: Settings) -> ShardLayout:
    """The gateway's shards when configured (``gateway.shards``), else the local runner's
    query nodes; either way the partitions each shard owns are those its nodes consume."""
    gw = settings.gateway
    if gw.shards:
        urls = [list(replicas) for replicas in gw.shards]
        num_partitions = gw.num_partitions or settings.kafka.partitions
    else:
        from nrtrec.deploy.services.query_nodes import shard_url

        urls = [[shard_url(settings, s)] for s in range(settings.local.query_node_shards)]
        num_partitions = settings.kafka.partitions
    try:
        shard_map = ShardMap.of(len(urls), num_partitions, gw.shard_partitions)
    except ValueError as e:
        raise BulkError(f"the shard map in settings is not usable: {e}") from None
    return ShardLayout(shard_map, urls)


def default_out_dir(settings: Settings) -> Path:
    return settings.streaming.bulk_dir or settings.run_dir / "bulk"


# ---- 1. the marks ---------------------------------------------------------------------------


def high_watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """Partition → (low, high) watermark of every partition of ``topic``."""
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
    except KafkaException as e:
        raise BulkError(f"cannot read the metadata of topic {topic!r}: {e}") from None
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = metadata.error if metadata is not None else "absent"
        raise BulkError(f"topic {topic!r} is not there ({reason}); is Kafka up (`nrtrec up`)?")
    return {p: _watermarks(consumer, topic, p) for p in sorted(metadata.partitions)}


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    # A partition between leaders (a new topic, a broker restart) answers NOT_LEADER for a
    # moment: retried until METADATA_TIMEOUT_S, like librdkafka retries its own requests.
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S, cached=False
            )
            return int(low), int(high)
        except KafkaException as e:
            error = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            transient = error is not None and (error.retriable() or error.code() in _TRANSIENT)
            if not transient or time.monotonic() > deadline:
                raise BulkError(f"cannot read the offsets of {topic}:{partition}: {e}") from None
            time.sleep(0.2)


# ---- 2. the catalogue -----------------------------------------------------------------------


@dataclass
class Catalogue:
    """Each item's latest state as of the marks."""

    live: dict[str, ListingEvent] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    records: int = 0
    dead_letters: int = 0


class DeadLetters:
    """Produces the dead letters of the read; ``close`` waits until Kafka has every one."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "nrtrec-bulk-dead-letters",
                "enable.idempotence": True,
                "linger.ms": 5,
                **PRODUCER_CONFIG,
            }
        )
        self.sent = 0
        self.failures: list[KafkaError] = []

    def send(self, message: Message, error: str) -> None:
        letter = DeadLetter(
            source_topic=message.topic() or "",
            partition=message.partition(),
            offset=message.offset(),
            error=error,
            payload=payload_text(message.value()),
        )
        if self.sent == 0:
            # One line for the first; the count is in bulk.json.
            log.warning(
                "listing %d@%d to %s: %s",
                message.partition(),
                message.offset(),
                self.topic,
                error,
            )
        self.producer.produce(
            self.topic, key=message.key(), value=encode(letter), on_delivery=self._delivered
        )
        self.sent += 1
        self.producer.poll(0)

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self.failures.append(error)

    def close(self) -> None:
        left = self.producer.flush(30)
        if left or self.failures:
            raise BulkError(
                f"{left} dead letter(s) to {self.topic} undelivered, {len(self.failures)} failed"
                + (f": {self.failures[0]}" if self.failures else "")
            )


def fold(catalogue: Catalogue, message: Message, dead_letters: DeadLetters) -> None:
    """One ``listings`` record into the catalogue, or into dead-letters with the reason; a
    rejected record leaves its item as it was."""
    catalogue.records += 1
    reason = _apply(catalogue, message)
    if reason is not None:
        dead_letters.send(message, reason)
        catalogue.dead_letters += 1


def _apply(catalogue: Catalogue, message: Message) -> str | None:
    """Why the record cannot be applied, or None once it is."""
    value = message.value()
    if value is None:
        return "no value (a tombstone); expected a ListingEvent"
    try:
        listing = decode(ListingEvent, value)
    except InvalidRecord as e:
        return str(e)
    key = message.key()
    if key is None or key != listing.item_id.encode():
        # The key decides the partition, and only within one partition is the order of an
        # item's changes known; a record keyed otherwise cannot be placed in that order.
        shown = None if key is None else payload_text(key)
        return f"key {shown!r} is not the item_id {listing.item_id!r}"
    if listing.op is ListingOp.DELETE:
        catalogue.live.pop(listing.item_id, None)
        catalogue.deleted.add(listing.item_id)
        return None
    try:
        # Valid as a record but without text the item tower can read (a blank title): caught
        # here, the item keeps its previous state instead of failing a whole encoder batch.
        listing_text(listing.title, listing.category, listing.aspects)
    except BadEncoderInput as e:
        return f"cannot be encoded: {e}"
    catalogue.live[listing.item_id] = listing
    catalogue.deleted.discard(listing.item_id)
    return None


def read_catalogue(
    consumer: Consumer,
    topic: str,
    marks: Mapping[int, tuple[int, int]],
    dead_letters: DeadLetters,
    progress: ProgressCallback | None = None,
) -> Catalogue:
    """``topic`` from each partition's low watermark up to (not including) its high one."""
    catalogue = Catalogue()
    # Partition -> the first offset not to read. Offsets may have gaps (transaction markers,
    # compaction), so a partition is done at its mark, at a record past it, or at its end.
    remaining = {p: high for p, (low, high) in marks.items() if high > low}
    total = sum(high - low for low, high in marks.values())
    if not remaining:
        return catalogue
    consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in remaining])

    def done(p: int) -> None:
        del remaining[p]
        # Nothing past the mark is wanted; stop fetching it.
        consumer.pause([TopicPartition(topic, p)])

    last_record = time.monotonic()
    while remaining:
        messages = consumer.consume(POLL_BATCH, 0.5)
        if not messages and time.monotonic() - last_record > STALL_TIMEOUT_S:
            where = ", ".join(f"{p} (to {o})" for p, o in sorted(remaining.items()))
            raise BulkError(
                f"no record of {topic} for {STALL_TIMEOUT_S:.0f} s before the marks of "
                f"partitions {where}; is Kafka up?"
            )
        for message in messages:
            p = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if p in remaining and message.offset() >= remaining[p]:
                        done(p)
                    continue
                if error.fatal() or not error.retriable():
                    raise BulkError(f"reading {topic}: {error}")
                log.warning("reading %s: %s", topic, error)
                continue
            last_record = time.monotonic()
            if p not in remaining:
                continue
            if message.offset() >= remaining[p]:
                done(p)
                continue
            fold(catalogue, message, dead_letters)
            if message.offset() + 1 >= remaining[p]:
                done(p)
        if progress is not None:
            progress(READING, catalogue.records, max(total, catalogue.records))
    consumer.unassign()
    return catalogue


# ---- 3 and 4: vectors and shards ------------------------------------------------------------


@dataclass(frozen=True)
class BuiltShard:
    shard: int
    partitions: tuple[int, ...]
    index: VectorIndex


def encode_catalogue(
    settings: Settings,
    listings: list[ListingEvent],
    version: int | None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors of ``listings`` (in order) and the encoder version that made them."""
    with open_encoder(settings) as encoder:
        version = encoder.resolve(version)
        if not listings:
            return np.zeros((0, settings.inference.dim), np.float32), version
        log.info("encoding %d listings with encoder version %d", len(listings), version)
        parts = []
        step = settings.inference.batch_size
        for start in range(0, len(listings), step):
            embeddings = encoder.encode_listings(listings[start : start + step], version)
            parts.append(embeddings.vectors)
            if progress is not None:
                progress(ENCODING, min(start + step, len(listings)), len(listings))
        return np.concatenate(parts), version


def build_shards(
    settings: Settings,
    shard_map: ShardMap,
    listings: list[ListingEvent],
    vectors: np.ndarray,
    version: int,
    progress: ProgressCallback | None = None,
) -> list[BuiltShard]:
    """One index per shard holding the items of that shard's partitions."""
    qn = settings.query_node
    rows: list[list[int]] = [[] for _ in range(shard_map.num_shards)]
    for row, listing in enumerate(listings):
        rows[shard_map.shard_for(listing.item_id)].append(row)
    dim = int(vectors.shape[1]) if len(listings) else settings.inference.dim
    built = []
    for shard, mine in enumerate(rows):
        spec = IndexSpec(
            name=qn.index_name,
            model_version=version,
            dim=dim,
            metric=Metric.COSINE,
            M=qn.M,
            ef_construction=qn.ef_construction,
            # Room for the deltas that follow, so the first new items do not resize the graph
            # on a node that is serving it.
            max_elements=max(qn.max_elements, math.ceil(len(mine) * 1.25)),
        )
        index = VectorIndex(spec, qn)
        if mine:
            index.upsert(
                [listings[r].item_id for r in mine],
                vectors[mine],
                [listing_attributes(listings[r]) for r in mine],
            )
        built.append(BuiltShard(shard, shard_map.partitions_of(shard), index))
        if progress is not None:
            progress(BUILDING, shard + 1, shard_map.num_shards)
    return built


# ---- the run --------------------------------------------------------------------------------


def run_bulk(
    settings: Settings,
    out_dir: Path | None = None,
    version: int | None = None,
    progress: ProgressCallback | None = None,
) -> BulkManifest:
    """Read, encode, shard and snapshot the catalogue; write and return ``bulk.json``.

    ``version``: the encoder version (None: ``inference.model_version``, else the newest).
    """
    started = time.monotonic()
    out_dir = Path(out_dir or default_out_dir(settings))
    topics = Topics.of(settings)
    layout = shard_layout(settings)
    bootstrap = settings.kafka.bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # Partitions are assigned, not subscribed: the group is never joined nor committed.
            "group.id": f"nrtrec-bulk-{uuid.uuid4().hex[:8]}",
            "client.id": "nrtrec-bulk",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "logger": logging.getLogger("nrtrec.streaming.kafka"),
        }
    )
    try:
        # item-deltas first: see the module's docstring.
        delta_marks = {
            p: high for p, (_, high) in high_watermarks(consumer, topics.item_deltas).items()
        }
        if len(delta_marks) != layout.shard_map.num_partitions:
            raise BulkError(
                f"{topics.item_deltas} has {len(delta_marks)} partitions but the shard map "
                f"is for {layout.shard_map.num_partitions} (kafka.partitions / "
                "gateway.num_partitions): items would land on the wrong shards"
            )
        listing_marks = high_watermarks(consumer, topics.listings)
        log.info(
            "bulk: %s up to %s; %s marks %s",
            topics.listings,
            {p: high for p, (_, high) in listing_marks.items()},
            topics.item_deltas,
            delta_marks,
        )
        dead_letters = DeadLetters(bootstrap, topics.dead_letters)
        catalogue = read_catalogue(consumer, topics.listings, listing_marks, dead_letters, progress)
        dead_letters.close()
    finally:
        consumer.close()
    log.info(
        "bulk: %d records: %d live items, %d deleted, %d dead letters",
        catalogue.records,
        len(catalogue.live),
        len(catalogue.deleted),
        catalogue.dead_letters,
    )

    # Sorted by id: the same catalogue builds the same indexes, whatever order it was read in.
    listings = [catalogue.live[i] for i in sorted(catalogue.live)]
    vectors, version = encode_catalogue(settings, listings, version, progress)
    built = build_shards(settings, layout.shard_map, listings, vectors, version, progress)

    shards = []
    for b in built:
        store = SnapshotStore(out_dir / f"shard-{b.shard}", settings.query_node)
        offsets = {offset_key(topics.item_deltas, p): delta_marks[p] for p in b.partitions}
        snapshot = store.save(b.index, offsets=offsets)
        shards.append(
            BulkShard(
                shard=b.shard,
                partitions=list(b.partitions),
                snapshot_path=str(snapshot.path.resolve()),
                count=snapshot.count,
            )
        )
        log.info("bulk: shard %d: %d items in %s", b.shard, snapshot.count, snapshot.path)

    manifest = BulkManifest(
        model_version=version,
        index_name=settings.query_node.index_name,
        items=len(listings),
        deleted=len(catalogue.deleted),
        dead_letters=catalogue.dead_letters,
        listings_topic=topics.listings,
        listings_offsets={p: high for p, (_, high) in listing_marks.items()},
        item_deltas_topic=topics.item_deltas,
        item_deltas_offsets=delta_marks,
        shards=shards,
        created=datetime.now(UTC).isoformat(),
        seconds=round(time.monotonic() - started, 3),
    )
    _write_manifest(out_dir / MANIFEST, manifest)
    return manifest


def _write_manifest(path: Path, manifest: BulkManifest) -> None:
    # Renamed into place: a job that reads it never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


# ---- 5. hot swap ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedShard:
    shard: int
    url: str
    count: int
    offsets: dict[str, int]


def load_snapshots(
    settings: Settings,
    manifest: BulkManifest,
    urls: list[list[str]] | None = None,
) -> list[LoadedShard]:
    """Each shard's snapshot swapped in on every query node of that shard.

    ``urls``: per shard, its nodes' base URLs (None: ``shard_layout(settings)``). The snapshot
    paths must be readable by the nodes (this machine, or a shared disk). Every node is tried;
    then a ``BulkError`` names each one that did not take its snapshot.
    """
    if urls is None:
        urls = shard_layout(settings).urls
    if len(urls) != len(manifest.shards):
        raise BulkError(
            f"the snapshots are for {len(manifest.shards)} shards but {len(urls)} are configured"
        )
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    loaded, failures = [], []
    timeout = settings.streaming.bulk_load_timeout_s
    with httpx.Client(headers=headers, timeout=timeout, trust_env=False) as client:
        for shard in manifest.shards:
            for url in urls[shard.shard]:
                target = f"{url.rstrip('/')}/v1/indexes/{manifest.index_name}/load"
                try:
                    response = client.post(target, json={"path": shard.snapshot_path})
                except httpx.HTTPError as e:
                    failures.append(f"shard {shard.shard} at {url}: {type(e).__name__}: {e}")
                    continue
                if response.status_code != 200:
                    failures.append(
                        f"shard {shard.shard} at {url}: HTTP {response.status_code} "
                        f"{response.text[:500]}"
                    )
                    continue
                for index in response.json()["loaded"]:
                    loaded.append(
                        LoadedShard(shard.shard, url, int(index["count"]), index["offsets"])
                    )
                    log.info("bulk: %s serves shard %d (%d items)", url, shard.shard, shard.count)
    if failures:
        raise BulkError("snapshots not loaded: " + "; ".join(failures))
    return loaded

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
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer

from nrtrec.ann import SnapshotStore
from nrtrec.core.kafka import DeadLetterFailed, DeadLetterProducer
from nrtrec.core.settings import Settings
from nrtrec.schemas.snapshot import offset_key
from nrtrec.streaming.bulk.build import build_shards, encode_catalogue
from nrtrec.streaming.bulk.catalogue import read_catalogue
from nrtrec.streaming.bulk.layout import shard_layout
from nrtrec.streaming.bulk.manifest import (
    MANIFEST,
    BulkManifest,
    BulkShard,
    default_out_dir,
    write_manifest,
)
from nrtrec.streaming.bulk.marks import high_watermarks
from nrtrec.streaming.bulk.progress import ProgressCallback
from nrtrec.streaming.errors import BulkError

log = logging.getLogger(__name__)


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
    topics = settings.topics
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
        dead_letters = DeadLetterProducer(bootstrap, topics.dead_letters, "nrtrec-bulk")
        catalogue = read_catalogue(consumer, topics.listings, listing_marks, dead_letters, progress)
        try:
            dead_letters.flush()
        except DeadLetterFailed as e:
            raise BulkError(str(e)) from None
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
    write_manifest(out_dir / MANIFEST, manifest)
    return manifest

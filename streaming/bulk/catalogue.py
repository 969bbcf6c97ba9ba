"""Step 2 of a bulk run: ``listings`` read up to its marks and folded into each item's latest
state; a record that cannot be folded becomes a dead letter with the reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from nrtrec.core.kafka import DeadLetterProducer
from nrtrec.inference.client import BadEncoderInput, listing_text
from nrtrec.schemas import InvalidRecord, ListingEvent, ListingOp, decode, payload_text
from nrtrec.streaming.bulk.progress import READING, ProgressCallback
from nrtrec.streaming.errors import BulkError

log = logging.getLogger(__name__)

# Reading stops with an error when no record arrives for this long before every mark is
# reached: the broker went away, or the marks lie past data that retention has deleted.
STALL_TIMEOUT_S = 60.0
POLL_BATCH = 1000


@dataclass
class Catalogue:
    """Each item's latest state as of the marks."""

    live: dict[str, ListingEvent] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    records: int = 0
    dead_letters: int = 0


def fold(catalogue: Catalogue, message: Message, dead_letters: DeadLetterProducer) -> None:
    """One ``listings`` record into the catalogue, or into dead-letters with the reason; a
    rejected record leaves its item as it was."""
    catalogue.records += 1
    reason = _apply(catalogue, message)
    if reason is not None:
        dead_letters.send_message(message, reason)
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
    dead_letters: DeadLetterProducer,
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

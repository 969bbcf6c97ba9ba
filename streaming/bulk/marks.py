"""Step 1 of a bulk run: where each topic ends (its high watermarks), read with retries over a
partition between leaders."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from nrtrec.core.settings import Settings
from nrtrec.streaming.errors import BulkError

METADATA_TIMEOUT_S = 15.0
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


def item_delta_marks(settings: Settings) -> dict[int, int]:
    """Partition → where ``item-deltas`` ends now (its high watermark): a rollout waits until
    the query nodes have applied up to here after swapping its snapshots in."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            # Only metadata and watermarks are read: the group is never joined.
            "group.id": f"nrtrec-marks-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "logger": logging.getLogger("nrtrec.streaming.kafka"),
        }
    )
    try:
        topic = settings.topics.item_deltas
        return {p: high for p, (_, high) in high_watermarks(consumer, topic).items()}
    finally:
        consumer.close()


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

"""Kafka topics of a test's own, and how many records one holds."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.waiting import wait_until


def make_topic(bootstrap: str, what: str = "clicks") -> str:
    """A topic of this test's own: other tests (and a running app) use the contract's."""
    topic = f"{what}-app-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    wait_until(f"topic {topic} served", lambda: topic in admin.list_topics(timeout=5).topics)
    return topic


def records_in(bootstrap: str, topic: str) -> int:
    """Records on ``topic``, by its partitions' watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
        ]
        return sum(high - low for low, high in marks)
    finally:
        consumer.close()

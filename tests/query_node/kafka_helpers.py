"""What the query-node tests on a real broker share: topics of their own, a node's settings on
them, a producer of item deltas as the contract wants them, and readers of what came out.

Each test has topics of its own (4 partitions, like the contract topics), so no other test's
records, and no streaming job's, reach its nodes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from nrtrec.core.kafka import partition_count, producer_config
from nrtrec.core.settings import QueryNodeSettings, Settings, TopicSettings
from nrtrec.query_node import QueryNode
from nrtrec.query_node.deltas import DeltaConsumer
from nrtrec.schemas import DeadLetter, ItemDelta, ListingOp, decode, encode
from tests.waiting import collect

DIM = 8
PARTITIONS = 4
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Generous: two cores shared with other work; nothing here asserts speed.
WAIT_S = 30.0


@dataclass(frozen=True)
class Topics:
    deltas: str
    dead_letters: str
    declarations: str


def settings_for(
    tmp_path: Path, bootstrap: str, topics: Topics, name: str = "node", **query_node: object
) -> Settings:
    qn = {
        "consume_deltas": True,
        "kafka_bootstrap": bootstrap,
        "consumer_group": f"test-{uuid.uuid4().hex[:8]}",
        "data_dir": tmp_path / name / "data",
        **query_node,
    }
    return Settings(
        run_dir=tmp_path / name / "run",
        token=TOKEN,
        query_node=QueryNodeSettings(**qn),
        topics=TopicSettings(
            item_deltas=topics.deltas,
            dead_letters=topics.dead_letters,
            index_declarations=topics.declarations,
        ),
    )


class DeltaProducer:
    """Produces item deltas (or any bytes) and reports where each landed."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer(producer_config(bootstrap, "test-deltas"))
        self.partitions = partition_count(self.producer, topic)
        self.sent: list[tuple[bytes | None, int | None, int | None]] = []
        self.errors: list[KafkaError] = []

    def send(self, key: bytes | None, value: bytes | None, partition: int | None = None) -> int:
        """Queue a record; its (key, partition, offset) is at the returned position of
        ``sent`` after ``flush``."""
        position = len(self.sent)
        self.sent.append((key, None, None))

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.errors.append(error)
            else:
                self.sent[position] = (key, message.partition(), message.offset())

        extra = {} if partition is None else {"partition": partition}
        self.producer.produce(self.topic, key=key, value=value, on_delivery=delivered, **extra)
        return position

    def upsert(
        self,
        item_id: str,
        vector: np.ndarray | list[float],
        version: int = 1,
        attributes: dict | None = None,
        partition: int | None = None,
    ) -> int:
        delta = ItemDelta(
            op=ListingOp.UPSERT,
            item_id=item_id,
            model_version=version,
            vector=[float(x) for x in vector],
            attributes=attributes or {},
            source_ts=int(time.time() * 1000),
        )
        return self.send_delta(delta, partition)

    def send_delta(self, delta: ItemDelta, partition: int | None = None) -> int:
        """As every producer of item-deltas does: keyed by item and version, on the item's
        partition (unless the test places it elsewhere)."""
        where = delta.partition(self.partitions) if partition is None else partition
        return self.send(delta.key().encode(), encode(delta), where)

    def delete(self, item_id: str, version: int = 1, partition: int | None = None) -> int:
        delta = ItemDelta(
            op=ListingOp.DELETE,
            item_id=item_id,
            model_version=version,
            source_ts=int(time.time() * 1000),
        )
        return self.send_delta(delta, partition)

    def flush(self) -> None:
        assert self.producer.flush(15) == 0
        assert self.errors == []

    def where(self, position: int) -> tuple[int, int]:
        _, partition, offset = self.sent[position]
        assert partition is not None and offset is not None
        return partition, offset


def nearest(node: QueryNode, vector: np.ndarray, name: str = "items") -> str | None:
    _, result = node.search(name, vector, k=1)
    return result.hits[0].id if result.hits else None


def committed(bootstrap: str, group: str, topic: str, partition: int) -> int:
    """The group's committed offset (negative when none)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = probe.committed([TopicPartition(topic, partition)], timeout=10)
        return tp.offset
    finally:
        probe.close()


@contextmanager
def running(consumer: DeltaConsumer) -> Iterator[DeltaConsumer]:
    consumer.start()
    try:
        assert consumer.wait_assigned(WAIT_S), "no partitions assigned"
        yield consumer
    finally:
        consumer.stop()
    assert not consumer.running


def dead_letters(bootstrap: str, topic: str, n: int) -> list[DeadLetter]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        messages = collect(consumer, lambda got: len(got) >= n, WAIT_S)
    finally:
        consumer.close()
    return [decode(DeadLetter, m.value()) for m in messages]


def records_on(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` holds (all partitions, from their high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in partitions
            )
        )
    finally:
        consumer.close()

"""What every nrtrec producer of Kafka records shares: its configuration and the dead letters.

Every producer of ours is idempotent with ``acks=all`` (a retry after a lost acknowledgement
never writes a record twice, and an acknowledged record is on every in-sync replica), and
places keyed records with Kafka's murmur2 partitioner (``schemas.partitioning``), so an item
lands on the partition its query-node shard reads whichever producer wrote it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import NewTopic

from nrtrec.core.settings import TopicSettings
from nrtrec.schemas import DeadLetter, Topic, encode, payload_text
from nrtrec.schemas.partitioning import PRODUCER_CONFIG

log = logging.getLogger(__name__)


def producer_config(bootstrap_servers: str, client_id: str, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka producer's config as every nrtrec producer sets it; ``overrides``
    (``linger.ms``, say) go on top."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        **PRODUCER_CONFIG,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **overrides,
    }


def partition_count(client: Producer | Any, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions ``topic`` has, from the cluster's metadata (a producer or consumer
    asks; a topic created a moment ago is waited for); ``ValueError`` when it is not there."""
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return len(metadata.partitions)
        if time.monotonic() > deadline:
            reason = "absent" if metadata is None else (metadata.error or "no partitions")
            raise ValueError(f"topic {topic!r} is not there ({reason})")
        time.sleep(0.2)


# How long each topic keeps what it holds. Compacted topics keep the newest record of every key
# forever: ``item-deltas`` (every item's newest vector per version, so a replica started from
# nothing replays everything it needs), ``listings`` (every item's newest listing, which a bulk
# run reads from the beginning) and ``index-declarations``. Events keep a week, impressions too:
# an experiment's report joins them with the clicks, which are gone after a week anyway.
WEEK_MS = str(7 * 24 * 3600 * 1000)
TOPIC_CONFIGS: dict[Topic, dict[str, str]] = {
    Topic.CLICKS: {"cleanup.policy": "delete", "retention.ms": WEEK_MS},
    Topic.LISTINGS: {"cleanup.policy": "compact"},
    Topic.ITEM_DELTAS: {"cleanup.policy": "compact"},
    Topic.DEAD_LETTERS: {"cleanup.policy": "delete", "retention.ms": WEEK_MS},
    # One partition: one order of declarations for every node.
    Topic.INDEX_DECLARATIONS: {"cleanup.policy": "compact"},
    Topic.IMPRESSIONS: {"cleanup.policy": "delete", "retention.ms": WEEK_MS},
}
SINGLE_PARTITION = {Topic.INDEX_DECLARATIONS}


def contract_topics(
    topics: TopicSettings, partitions: int, replication: int = 1, min_insync: int = 1
) -> list[NewTopic]:
    """The contract's topics as ``settings.topics`` names them, with their partitions,
    retention (``TOPIC_CONFIGS``), replicas and ``min.insync.replicas``."""
    return [
        NewTopic(
            name,
            num_partitions=1 if topic in SINGLE_PARTITION else partitions,
            replication_factor=replication,
            config={**TOPIC_CONFIGS[topic], "min.insync.replicas": str(min_insync)},
        )
        for topic, name in topics.all().items()
    ]


class DeadLetterFailed(Exception):
    """Dead letters that Kafka did not take; whoever sent them must not advance past them."""


class DeadLetterProducer:
    """Produces ``dead-letters`` records; ``flush`` raises unless Kafka has every one.

    A record is keyed like the input it stands for, so the dead letters of one item or user stay
    in order on one partition. The first letter of each flush is logged, the rest counted: a
    flood of bad input must not flood the log.
    """

    def __init__(self, bootstrap_servers: str, topic: str, client_id: str):
        self.topic = topic
        self.producer = Producer(producer_config(bootstrap_servers, client_id), logger=log)
        self.sent = 0
        self._failures: list[KafkaError] = []
        self._pending_first: str | None = None

    def send(self, letter: DeadLetter, key: bytes | None = None) -> None:
        if self._pending_first is None:
            where = "" if letter.partition is None else f" {letter.partition}@{letter.offset}"
            self._pending_first = f"{letter.source_topic}{where}: {letter.error}"
        self.producer.produce(
            self.topic, key=key, value=encode(letter), on_delivery=self._delivered
        )
        self.sent += 1
        self.producer.poll(0)

    def send_message(self, message: Message, error: str) -> None:
        """A dead letter for a record read from Kafka: its place and its value as text."""
        self.send(
            DeadLetter(
                source_topic=message.topic() or "",
                partition=message.partition(),
                offset=message.offset(),
                error=error,
                payload=payload_text(message.value()),
            ),
            key=message.key(),
        )

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until Kafka acknowledged every letter sent; ``DeadLetterFailed`` if not."""
        if self._pending_first is not None:
            log.warning("dead letters to %s; first: %s", self.topic, self._pending_first)
            self._pending_first = None
        left = self.producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if left or failures:
            raise DeadLetterFailed(
                f"{left} dead letter(s) to {self.topic} undelivered, {len(failures)} failed"
                + (f": {failures[0]}" if failures else "")
            )

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._failures.append(error)

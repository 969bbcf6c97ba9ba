"""Which indexes a deployment serves, declared durably on ``index-declarations``.

Why a compacted topic and not each node's own manifest: a node's data dir can be lost, and a
replica can start from nothing; neither knows from its own disk which indexes to build before it
replays ``item-deltas``. Every node reads this topic from its beginning at start and follows it
afterwards, so each one recreates exactly the declared indexes, however it starts, without
asking anybody. The topic is compacted (the newest declaration of each ``name:version`` stays
forever) and has one partition (one order for everybody).

A ``PUT /v1/indexes/{name}`` on a node that follows the topic creates the index and declares it
(produced with ``acks=all`` before the answer), ``building`` when it was asked not to serve yet
and ``live`` once ``POST .../promote`` serves it; a ``DELETE`` declares it ``dropped``, which every
node applies and remembers, so the deltas still on ``item-deltas`` for a dropped version are
skipped, not dead-lettered. The gateway's ``PUT`` reaches every replica, and each declares the
same record: compaction keeps one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from nrtrec.ann import AnnError, IndexSpec
from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.query_node.errors import IndexExists
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas import IndexDeclaration, InvalidRecord, decode, encode

log = logging.getLogger(__name__)


class DeclarationFailed(Exception):
    """A declaration Kafka did not take: the index changed here but is not declared; retry."""

    code = "declaration_failed"


@dataclass
class CatchUp:
    """What one read of the topic to its end changed on this node."""

    created: list[tuple[str, int]] = field(default_factory=list)
    dropped: list[tuple[str, int]] = field(default_factory=list)


class Declarations:
    """This node's view of ``index-declarations``: read to its end by ``catch_up``, written by
    ``declare`` and ``drop``. Thread-safe (one catch-up at a time)."""

    def __init__(self, node: QueryNode, settings: Settings | None = None):
        self.node = node
        settings = settings or node.settings
        self.topic = settings.topics.index_declarations
        self.bootstrap = settings.query_node.kafka_bootstrap or settings.kafka.bootstrap_servers
        self._settings = settings
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._position = OFFSET_BEGINNING
        self._lock = threading.Lock()
        # Every declaration read, by key: "dropped" ones make their deltas skippable.
        self.known: dict[tuple[str, int], IndexDeclaration] = {}

    def is_dropped(self, name: str, model_version: int) -> bool:
        declared = self.known.get((name, model_version))
        return declared is not None and declared.state == "dropped"

    # ---- reading ------------------------------------------------------------------------------

    def catch_up(self, timeout_s: float = 10.0) -> CatchUp:
        """Read the topic from where the last read stopped to its current end, and apply each
        declaration: create the live indexes this node lacks, drop the dropped ones it has."""
        with self._lock:
            consumer = self._consumer_at_position()
            deadline = time.monotonic() + timeout_s
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=timeout_s, cached=False
            )
            changes = CatchUp()
            while self._position < high:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.topic}: read to {self._position} of {high} in {timeout_s:.0f} s"
                    )
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                self._position = message.offset() + 1
                self._apply(message.value(), changes)
            return changes

    def _consumer_at_position(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": "nrtrec-index-declarations",  # never joined: assigned, no commits
                    "enable.auto.commit": False,
                    "logger": logging.getLogger("nrtrec.query_node.kafka"),
                }
            )
            self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        if self._position == OFFSET_BEGINNING:
            self._position = 0
        return self._consumer

    def _apply(self, value: bytes | None, changes: CatchUp) -> None:
        if value is None:
            return  # a tombstone: compaction's leftover of a removed key
        try:
            declared = decode(IndexDeclaration, value)
        except InvalidRecord as e:
            log.error("%s: not an index declaration, skipped: %s", self.topic, e)
            return
        key = (declared.name, declared.model_version)
        previous = self.known.get(key)
        if previous is not None and previous.ts > declared.ts:
            # This node declared something newer already (its own promote, read back later).
            return
        self.known[key] = declared
        if declared.state == "dropped":
            if key in self.node.registry:
                self.node.drop_index(*key)
                changes.dropped.append(key)
            return
        if key in self.node.registry:
            # Its state may have changed: a rollout promoted it, or this node restored it
            # from a snapshot before learning that it is still building.
            if declared.state == "building":
                self.node.hold_back(*key)
            else:
                self.node.promote(*key)
            return
        try:
            self.node.create_index(
                declared.name,
                declared.model_version,
                declared.dim,
                declared.metric,
                M=declared.M,
                ef_construction=declared.ef_construction,
                max_elements=declared.max_elements,
                backend=declared.backend,
                quantization=declared.quantization,
                serving=declared.state == "live",
            )
        except (IndexExists, AnnError) as e:
            log.error("%s: cannot build %s v%d: %s", self.topic, *key, e)
            return
        changes.created.append(key)
        log.info("declared index %s v%d created", *key)

    # ---- writing ------------------------------------------------------------------------------

    def declare(self, spec: IndexSpec, *, serving: bool = True) -> None:
        """Declare the index ``live`` (served), or ``building`` (held, not served yet)."""
        self._send(
            IndexDeclaration(
                name=spec.name,
                state="live" if serving else "building",
                model_version=spec.model_version,
                dim=spec.dim,
                metric=spec.metric.value,
                M=spec.M,
                ef_construction=spec.ef_construction,
                max_elements=spec.max_elements,
                backend=spec.backend.value,
                quantization=spec.quantization.value,
                ts=int(time.time() * 1000),
            )
        )

    def drop(self, spec: IndexSpec) -> None:
        declared = IndexDeclaration(
            name=spec.name,
            model_version=spec.model_version,
            state="dropped",
            dim=spec.dim,
            metric=spec.metric.value,
            M=spec.M,
            ef_construction=spec.ef_construction,
            max_elements=spec.max_elements,
            backend=spec.backend.value,
            quantization=spec.quantization.value,
            ts=int(time.time() * 1000),
        )
        self._send(declared)

    def _send(self, declared: IndexDeclaration) -> None:
        if self._producer is None:
            self._producer = Producer(
                producer_config(self.bootstrap, "nrtrec-index-declarations"),
                logger=logging.getLogger("nrtrec.query_node.kafka"),
            )
        failures: list[str] = []
        self._producer.produce(
            self.topic,
            key=declared.key().encode(),
            value=encode(declared),
            partition=0,
            on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
        )
        left = self._producer.flush(10)
        if left or failures:
            raise DeclarationFailed(
                f"{self.topic}: {declared.key()} not declared ({failures[:1] or 'no answer'})"
            )
        self.known[(declared.name, declared.model_version)] = declared

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException:
                log.exception("closing the declarations consumer failed")
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

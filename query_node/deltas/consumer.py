"""Keeps a query node fresh: applies ``item-deltas`` from Kafka.

``DeltaConsumer`` reads the topic in small batches in a background thread and applies each
batch to the node's index (settings ``query_node.index_name``) within a poll of its arrival
(``apply.apply_batch``). A record that cannot be applied becomes a ``DeadLetter`` on
``dead-letters`` with the reason, and the records after it still apply. Offsets advance
only after a batch is applied and its dead letters are delivered: first ``node.offsets``
(which snapshots record), then the consumer group's committed offsets, so delivery is at
least once; upserts and deletes are idempotent, and a replay converges on the same index.

Shards (DESIGN.md, "Scaling out"): with ``query_node.partitions`` the node is assigned those
partitions and owns them; a replica is one more node on the same partitions with another
consumer group. Without it the node subscribes to the whole topic with its group.

Where it starts: from the offsets of the restored snapshots; a partition they do not cover is
read from its beginning (``resume_without_snapshot``: the committed offset described an index
that died with the previous process). A hot swap (``swap_in``) moves it back to the swapped-in
snapshot's offsets.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from nrtrec.ann import VectorIndex
from nrtrec.core.kafka import DeadLetterProducer
from nrtrec.core.settings import QueryNodeSettings, Settings
from nrtrec.query_node.deltas.apply import AppliedDelta, Declared, Unapplicable, apply_batch
from nrtrec.query_node.deltas.metrics import DeltaMetrics
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas.snapshot import offset_key, parse_offset_key

log = logging.getLogger(__name__)

# How often the consumer-lag gauges are refreshed, and a repeated Kafka error is logged again.
LAG_REFRESH_S = 1.0
ERROR_LOG_EVERY_S = 30.0


def default_group(settings: QueryNodeSettings) -> str:
    """One consumer group per shard (its partition set) and replica."""
    parts = (
        "all" if settings.partitions is None else "-".join(map(str, sorted(settings.partitions)))
    )
    return f"nrtrec-query-node-p{parts}-r{settings.replica}"


class DeltaConsumer:
    """Applies ``item-deltas`` to ``node`` in a background thread: ``start()``, ``stop()``.

    ``lock`` is held while a batch is applied and ``node.offsets`` advances, so whoever holds
    it sees offsets that match the indexes.
    """

    def __init__(
        self,
        node: QueryNode,
        settings: Settings | None = None,
        *,
        metrics_registry: CollectorRegistry | None = None,
        declarations: Declared | None = None,
    ):
        self.node = node
        self.declarations = declarations
        # Deltas applied since the consumer started; the snapshotter counts from it.
        self.applied_total = 0
        self.settings = settings or node.settings
        qn = self.settings.query_node
        self.topic = self.settings.topics.item_deltas
        self.dead_letters_topic = self.settings.topics.dead_letters
        self.index_name = qn.index_name
        self.partitions = None if qn.partitions is None else sorted(set(qn.partitions))
        self.group_id = qn.consumer_group or default_group(qn)
        self.bootstrap_servers = qn.kafka_bootstrap or self.settings.kafka.bootstrap_servers
        self.lock = threading.RLock()
        self._qn = qn
        self._metrics = DeltaMetrics(metrics_registry or CollectorRegistry())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._dead_letters: DeadLetterProducer | None = None
        # Partition -> offset (or OFFSET_BEGINNING) to seek to on the next poll; under lock.
        self._pending_seeks: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._assigned_event = threading.Event()
        self._lag_refreshed = 0.0
        self._error_logged: dict[object, float] = {}

    # ---- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the thread; partitions start from ``node.offsets`` where known."""
        if self.running:
            return
        self._stop.clear()
        self._assigned_event.clear()
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "logger": logging.getLogger("nrtrec.query_node.kafka"),
                "group.id": self.group_id,
                "client.id": f"{self.group_id}-consumer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._dead_letters = DeadLetterProducer(
            self.bootstrap_servers, self.dead_letters_topic, f"{self.group_id}-dead-letters"
        )
        if self.partitions is None:
            self._consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
        else:
            self._assign(self._consumer, [TopicPartition(self.topic, p) for p in self.partitions])
        self._thread = threading.Thread(target=self._run, name="item-deltas", daemon=True)
        self._thread.start()
        log.info(
            "consuming %s (partitions %s) from %s as group %s into index %r",
            self.topic,
            "all" if self.partitions is None else self.partitions,
            self.bootstrap_servers,
            self.group_id,
            self.index_name,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then close the consumer; idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("the item-deltas thread did not stop within %.0f s", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_assigned(self, timeout: float) -> bool:
        """Whether partitions were assigned within ``timeout`` (subscribing joins a group)."""
        return self._assigned_event.wait(timeout)

    @property
    def assigned(self) -> list[int]:
        return sorted(self._assigned)

    def applied_offsets(self) -> dict[str, int]:
        """``node.offsets`` as of the last applied batch: safe to store with a snapshot."""
        with self.lock:
            return dict(self.node.offsets)

    # ---- hot swap -------------------------------------------------------------------------

    def swap_in(self, index: VectorIndex, offsets: Mapping[str, int]) -> dict[str, int]:
        """Serve ``index`` in place of its version's current one, and replay from ``offsets``
        (those of its snapshot) where they are older than what is applied.

        A partition this node has applied but the snapshot has no offset for is replayed from
        its beginning. Returns the offsets the swapped-in index reflects.
        """
        snapshot_offsets = {}
        for key, offset in offsets.items():
            place = parse_offset_key(key)
            if place is not None and place.topic == self.topic:
                snapshot_offsets[place.partition] = int(offset)
        with self.lock:
            # The other indexes hold what is applied; what the swap replays is for this one.
            self.node.hold_floors(self.node.offsets, except_key=index.spec.key)
            self.node.registry.swap(index)
            applied = dict(self.node.offsets)
            seeks: dict[int, int] = {}
            for key, current in list(applied.items()):
                place = parse_offset_key(key)
                if place is None or place.topic != self.topic:
                    continue
                p = place.partition
                target = snapshot_offsets.get(p)
                if target is None:
                    del applied[key]
                    seeks[p] = OFFSET_BEGINNING
                elif target < current:
                    applied[key] = target
                    seeks[p] = target
            if self._qn.resume_without_snapshot == "committed":
                # Partitions started from a committed offset may be past the snapshot.
                for p, target in snapshot_offsets.items():
                    if offset_key(self.topic, p) not in self.node.offsets:
                        seeks[p] = target
            self.node.offsets = applied
            for p, target in seeks.items():
                # OFFSET_BEGINNING (-2) is below every real offset.
                self._pending_seeks[p] = min(target, self._pending_seeks.get(p, target))
            # What the new index holds: the snapshot's offsets, lowered to the node's.
            return {
                **{offset_key(self.topic, p): o for p, o in snapshot_offsets.items()},
                **applied,
            }

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stop.is_set():
                try:
                    self._step(consumer)
                except Exception:
                    log.exception("item-deltas: batch failed; retrying")
                    self._stop.wait(1.0)
        finally:
            try:
                consumer.close()
            except Exception:
                log.exception("item-deltas: closing the consumer failed")
            if self._dead_letters is not None:
                self._dead_letters.producer.flush(10)
            self._assigned.clear()
            log.info("item-deltas consumer stopped")

    def _step(self, consumer: Consumer) -> None:
        # Wait for one record, then take what else has arrived without waiting: consume()
        # alone would wait out its whole timeout for a batch that is not full.
        first = consumer.poll(self._qn.delta_poll_s)
        messages = [] if first is None else [first]
        if first is not None and self._qn.delta_batch > 1:
            messages += consumer.consume(self._qn.delta_batch - 1, 0)
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                self._log_kafka_error(error)
        with self.lock:
            sought = self._seek_pending(consumer)
            if sought:
                # Read again from the new position; what is in hand is from before the seek.
                records = [m for m in records if m.partition() not in sought]
            try:
                advanced = self._apply(records) if records else {}
            except Exception:
                # Nothing advanced: read the batch again (applying it twice is harmless).
                self._rewind(consumer, records)
                raise
        if advanced:
            self._commit(consumer, advanced)
        now = time.monotonic()
        if now - self._lag_refreshed >= LAG_REFRESH_S:
            self._lag_refreshed = now
            self._refresh_lag(consumer)
            self._follow_declarations()

    def _follow_declarations(self) -> None:
        """Indexes declared or dropped by others (a PUT on another node) reach this one too."""
        if self.declarations is None:
            return
        try:
            self.declarations.catch_up(timeout_s=2.0)
        except Exception as e:
            self._log_once("declarations", f"index-declarations not read: {e}")

    def _apply(self, messages: list[Message]) -> dict[int, int]:
        """Apply one batch; returns partition -> next offset. Holds ``lock``."""
        outcome = apply_batch(self.node, self.index_name, messages, self.declarations)
        if outcome.dead:
            self._send_dead_letters(outcome.dead)
        self.applied_total += len(outcome.applied)
        for _ in outcome.skipped:
            self._metrics.skipped.inc()
        advanced: dict[int, int] = {}
        for message in messages:
            p = message.partition()
            advanced[p] = max(advanced.get(p, 0), message.offset() + 1)
        self.node.offsets = {
            **self.node.offsets,
            **{offset_key(self.topic, p): o for p, o in advanced.items()},
        }
        self._observe(outcome.applied, outcome.dead)
        return advanced

    def _send_dead_letters(self, dead: list[tuple[Message, Unapplicable]]) -> None:
        """Every dead letter delivered, or ``DeadLetterFailed``: the batch is then not committed
        and is read again."""
        producer = self._dead_letters
        assert producer is not None
        for message, unapplicable in dead:
            producer.send_message(message, unapplicable.error)
        producer.flush(30)

    def _commit(self, consumer: Consumer, advanced: Mapping[int, int]) -> None:
        offsets = [TopicPartition(self.topic, p, o) for p, o in advanced.items() if o >= 0]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            # The node's own offsets (and its snapshots) are what it resumes from; the group's
            # are for lag monitoring and for "committed" resumption: the next commit catches up.
            log.warning("item-deltas: commit failed: %s", e)

    # ---- assignment and seeking -----------------------------------------------------------

    def _start_offset(self, partition: int) -> int:
        applied = self.node.offsets.get(offset_key(self.topic, partition))
        if applied is not None:
            return applied
        if self._qn.resume_without_snapshot == "committed":
            return OFFSET_STORED
        return OFFSET_BEGINNING

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            for tp in partitions:
                tp.offset = self._start_offset(tp.partition)
            consumer.assign(partitions)
            self._assigned = {tp.partition for tp in partitions}
        log.info(
            "item-deltas: assigned %s",
            ", ".join(f"{tp.partition}@{_offset_text(tp.offset)}" for tp in partitions),
        )
        self._assigned_event.set()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every applied batch is committed already. The revoked partitions' items stay in the
        # index: with a fixed shard map (explicit partitions) revocation does not happen.
        with self.lock:
            self._assigned -= {tp.partition for tp in partitions}
        consumer.unassign()

    def _seek_pending(self, consumer: Consumer) -> set[int]:
        """Seek the partitions a hot swap asked for; returns those whose records in hand are
        from before it and must be dropped. Holds ``lock``."""
        if not self._pending_seeks:
            return set()
        seeks, self._pending_seeks = self._pending_seeks, {}
        moved: dict[int, int] = {}
        for p, offset in seeks.items():
            if p not in self._assigned:
                continue
            try:
                consumer.seek(TopicPartition(self.topic, p, offset))
            except KafkaException as e:
                # Tried again next poll; until then nothing of p applies (node.offsets for p
                # is already the lowered one, and must stay so).
                log.warning("item-deltas: seek of partition %d failed, retrying: %s", p, e)
                self._pending_seeks[p] = offset
                continue
            moved[p] = offset
            log.info("item-deltas: partition %d replays from %s", p, _offset_text(offset))
        lowered = {p: o for p, o in moved.items() if o >= 0}
        if lowered:
            self._commit(consumer, lowered)
        return set(seeks) & self._assigned

    def _rewind(self, consumer: Consumer, records: list[Message]) -> None:
        first: dict[int, int] = {}
        for m in records:
            first[m.partition()] = min(first.get(m.partition(), m.offset()), m.offset())
        for p, offset in first.items():
            try:
                consumer.seek(TopicPartition(self.topic, p, offset))
            except KafkaException as e:
                log.error("item-deltas: could not rewind partition %d to %d: %s", p, offset, e)

    # ---- observing ------------------------------------------------------------------------

    def _observe(
        self, applied: list[AppliedDelta], dead: list[tuple[Message, Unapplicable]]
    ) -> None:
        m = self._metrics
        now_ms = time.time() * 1000.0
        for item in applied:
            m.applied.labels(item.delta.op.value).inc()
            m.delay.observe(max(0.0, now_ms - item.delta.source_ts) / 1000.0)
        if applied:
            m.freshness.set(max(0.0, now_ms - applied[-1].delta.source_ts) / 1000.0)
        for _, rejected in dead:
            m.dead_lettered.labels(rejected.reason).inc()

    def _refresh_lag(self, consumer: Consumer) -> None:
        offsets = self.node.offsets
        for p in list(self._assigned):
            position = offsets.get(offset_key(self.topic, p))
            try:
                # Cached: the high watermark of the last fetch response, no request.
                _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            self._metrics.lag.labels(str(p)).set(max(0, high - (position or 0)))

    def _log_kafka_error(self, error: KafkaError) -> None:
        self._log_once(error.code(), f"item-deltas: {error}")

    def _log_once(self, what: object, message: str) -> None:
        """A repeated problem is logged once every ``ERROR_LOG_EVERY_S``."""
        now = time.monotonic()
        if now - self._error_logged.get(what, -math.inf) >= ERROR_LOG_EVERY_S:
            self._error_logged[what] = now
            log.warning("%s", message)


def _offset_text(offset: int) -> str:
    return {OFFSET_BEGINNING: "beginning", OFFSET_STORED: "committed"}.get(offset, str(offset))

"""Keeps a query node fresh: applies ``item-deltas`` from Kafka, snapshots, hot swaps.

``DeltaConsumer`` reads the topic in small batches in a background thread and applies each
batch to the node's index (settings ``query_node.index_name``) within a poll of its arrival:
consecutive upserts (or deletes) of one ``model_version`` become one ``upsert`` (``delete``)
call. A record that cannot be applied (not JSON, not an ``ItemDelta``, a key that is not its
``item_id``, a version that has no index here, a vector of the wrong dimension) becomes a
``DeadLetter`` on ``dead-letters``, and the records after it still apply. Offsets advance
only after a batch is applied and its dead letters are delivered: first ``node.offsets``
(which snapshots record), then the consumer group's committed offsets, so delivery is at
least once; upserts and deletes are idempotent, and a replay converges on the same index.

Shards (DESIGN.md, "Scaling out"): with ``query_node.partitions`` the node is assigned those
partitions and owns them; a replica is one more node on the same partitions with another
consumer group. Without it the node subscribes to the whole topic with its group.

Where it starts: from the offsets of the restored snapshots; a partition they do not cover is
read from its beginning (``resume_without_snapshot``: the committed offset described an index
that died with the previous process).

``Snapshotter`` saves snapshots whose offsets never run ahead of what the indexes hold, every
``snapshot_interval_s`` and on request, and swaps in indexes built elsewhere (the bulk
backfill): the consumer then replays from the swapped-in snapshot's offsets.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nrtrec.query_node.errors import QueryNodeError
from nrtrec.query_node.index import VectorIndex
from nrtrec.query_node.node import QueryNode
from nrtrec.query_node.snapshots import Snapshot
from nrtrec.schemas import (
    DeadLetter,
    InvalidRecord,
    ItemDelta,
    ListingOp,
    Topic,
    decode,
    encode,
    payload_text,
)
from nrtrec.settings import QueryNodeSettings, Settings

log = logging.getLogger(__name__)

# Produce-to-apply delay: the freshness target is p95 <= 1 s.
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# How often the consumer-lag gauges are refreshed, and a repeated Kafka error is logged again.
LAG_REFRESH_S = 1.0
ERROR_LOG_EVERY_S = 30.0


def default_group(settings: QueryNodeSettings) -> str:
    """One consumer group per shard (its partition set) and replica."""
    parts = (
        "all" if settings.partitions is None else "-".join(map(str, sorted(settings.partitions)))
    )
    return f"nrtrec-query-node-p{parts}-r{settings.replica}"


def offset_key(topic: str, partition: int) -> str:
    """The key of ``QueryNode.offsets`` and of a snapshot's offsets."""
    return f"{topic}:{partition}"


class DeadLetterFailed(Exception):
    """Dead letters that Kafka did not take; the batch is not committed and is read again."""


@dataclass
class _Rejected(Exception):
    reason: str
    error: str


@dataclass(frozen=True)
class _Delta:
    message: Message
    delta: ItemDelta


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
    ):
        self.node = node
        self.settings = settings or node.settings
        qn = self.settings.query_node
        self.topic = qn.deltas_topic or Topic.ITEM_DELTAS.value
        self.dead_letters_topic = qn.dead_letters_topic or Topic.DEAD_LETTERS.value
        self.index_name = qn.index_name
        self.partitions = None if qn.partitions is None else sorted(set(qn.partitions))
        self.group_id = qn.consumer_group or default_group(qn)
        self.bootstrap_servers = qn.kafka_bootstrap or self.settings.kafka.bootstrap_servers
        self.lock = threading.RLock()
        self._qn = qn
        self._metrics = _DeltaMetrics(metrics_registry or CollectorRegistry())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # Partition -> offset (or OFFSET_BEGINNING) to seek to on the next poll; under lock.
        self._pending_seeks: dict[int, int] = {}
        self._assigned: set[int] = set()
        self._assigned_event = threading.Event()
        self._lag_refreshed = 0.0
        self._error_logged: dict[int, float] = {}

    # ---- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the thread; partitions start from ``node.offsets`` where known."""
        if self.running:
            return
        self._stop.clear()
        self._assigned_event.clear()
        kafka_log = logging.getLogger("nrtrec.query_node.kafka")
        common = {"bootstrap.servers": self.bootstrap_servers, "logger": kafka_log}
        self._consumer = Consumer(
            {
                **common,
                "group.id": self.group_id,
                "client.id": f"{self.group_id}-consumer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._producer = Producer(
            {
                **common,
                "client.id": f"{self.group_id}-dead-letters",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
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
            topic, _, partition = str(key).rpartition(":")
            if topic == self.topic and partition.isdigit():
                snapshot_offsets[int(partition)] = int(offset)
        with self.lock:
            self.node.registry.swap(index)
            applied = dict(self.node.offsets)
            seeks: dict[int, int] = {}
            for key, current in list(applied.items()):
                topic, _, partition = key.rpartition(":")
                if topic != self.topic:
                    continue
                p = int(partition)
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
            if self._producer is not None:
                self._producer.flush(10)
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

    def _apply(self, messages: list[Message]) -> dict[int, int]:
        """Apply one batch; returns partition -> next offset. Holds ``lock``."""
        dead: list[tuple[Message, _Rejected]] = []
        by_version: dict[int, list[_Delta]] = {}
        for message in messages:
            try:
                item = _Delta(message, self._decode(message))
            except _Rejected as rejected:
                dead.append((message, rejected))
                continue
            by_version.setdefault(item.delta.model_version, []).append(item)
        applied: list[_Delta] = []
        for version, items in by_version.items():
            if (self.index_name, version) not in self.node.registry:
                error = f"unknown model_version {version} for index {self.index_name}"
                dead.extend((item.message, _Rejected("unknown_version", error)) for item in items)
                continue
            # Order matters only per item and version: consecutive runs of one op keep it.
            for run in _runs(items):
                self._apply_run(version, run, applied, dead)
        if dead:
            self._send_dead_letters(dead)
        advanced: dict[int, int] = {}
        for message in messages:
            p = message.partition()
            advanced[p] = max(advanced.get(p, 0), message.offset() + 1)
        self.node.offsets = {
            **self.node.offsets,
            **{offset_key(self.topic, p): o for p, o in advanced.items()},
        }
        self._observe(applied, dead)
        return advanced

    def _decode(self, message: Message) -> ItemDelta:
        value = message.value()
        if value is None:
            raise _Rejected("invalid_record", "no value (a tombstone); expected an ItemDelta")
        try:
            delta = decode(ItemDelta, value)
        except InvalidRecord as e:
            raise _Rejected("invalid_record", str(e)) from None
        key = message.key()
        if key is None or key != delta.item_id.encode():
            # The key places the item in its shard; another key puts it in another's.
            shown = None if key is None else payload_text(key)
            raise _Rejected("key_mismatch", f"key {shown!r} is not the item_id {delta.item_id!r}")
        return delta

    def _apply_run(
        self,
        version: int,
        run: list[_Delta],
        applied: list[_Delta],
        dead: list[tuple[Message, _Rejected]],
    ) -> None:
        """Apply a run of one op; when the batch call fails, each record alone, so only the
        bad ones become dead letters."""
        deltas = [item.delta for item in run]
        try:
            if deltas[0].op is ListingOp.UPSERT:
                self.node.upsert(
                    self.index_name,
                    [d.item_id for d in deltas],
                    [d.vector for d in deltas],
                    [d.attributes for d in deltas],
                    model_version=version,
                )
            else:
                self.node.delete(
                    self.index_name, [d.item_id for d in deltas], model_version=version
                )
        except Exception as e:
            if len(run) > 1:
                for item in run:
                    self._apply_run(version, [item], applied, dead)
                return
            if isinstance(e, QueryNodeError):
                dead.append((run[0].message, _Rejected(e.code, str(e))))
            else:
                log.exception("item-deltas: applying %s failed", deltas[0].item_id)
                dead.append((run[0].message, _Rejected("apply_failed", f"{type(e).__name__}: {e}")))
            return
        applied.extend(run)

    def _send_dead_letters(self, dead: list[tuple[Message, _Rejected]]) -> None:
        producer = self._producer
        assert producer is not None
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                failures.append(error)

        for message, rejected in dead:
            letter = DeadLetter(
                source_topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                error=rejected.error,
                payload=payload_text(message.value()),
            )
            producer.produce(
                self.dead_letters_topic,
                key=message.key(),
                value=encode(letter),
                on_delivery=delivered,
            )
        # One line per batch: a flood of bad records must not flood the log.
        message, rejected = dead[0]
        log.warning(
            "item-deltas: %d record(s) to %s; first %d@%d: %s",
            len(dead),
            self.dead_letters_topic,
            message.partition(),
            message.offset(),
            rejected.error,
        )
        left = producer.flush(30)
        if left or failures:
            raise DeadLetterFailed(
                f"{left} dead letter(s) undelivered, {len(failures)} failed"
                + (f": {failures[0]}" if failures else "")
            )

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

    def _observe(self, applied: list[_Delta], dead: list[tuple[Message, _Rejected]]) -> None:
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
        now = time.monotonic()
        if now - self._error_logged.get(error.code(), -math.inf) >= ERROR_LOG_EVERY_S:
            self._error_logged[error.code()] = now
            log.warning("item-deltas: %s", error)


class Snapshotter:
    """Snapshots whose offsets never run ahead of the indexes, every ``interval_s`` (in a thread
    of its own) and on request; and hot swaps of indexes built elsewhere.

    Saving runs outside the consumer's lock, so deltas keep applying while an index is written;
    a snapshot then holds at least what its offsets say, and replaying from them is safe.
    """

    def __init__(
        self,
        node: QueryNode,
        interval_s: float | None = None,
        deltas: DeltaConsumer | None = None,
    ):
        self.node = node
        self.interval_s = interval_s
        self.deltas = deltas
        # One save or swap at a time: a periodic save must not store a swapped-out index as
        # the newest snapshot, or one with offsets past a swapped-in index.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def take(self) -> list[Snapshot]:
        """Save every index changed since its last snapshot, with the applied offsets."""
        with self._lock:
            offsets = self.deltas.applied_offsets() if self.deltas else dict(self.node.offsets)
            saved = []
            for index in list(self.node.registry):
                try:
                    saved += self.node.snapshot(
                        index.name, index.model_version, offsets=offsets, only_changed=True
                    )
                except QueryNodeError as e:  # dropped meanwhile
                    log.info("snapshot of %s v%d skipped: %s", index.name, index.model_version, e)
            return saved

    def load(self, index: VectorIndex, offsets: Mapping[str, int]) -> Snapshot:
        """Serve ``index`` (read from a snapshot with ``offsets``) in place of its version's
        current one without stopping searches; save it here, so a restart serves it too."""
        with self._lock:
            if self.deltas is not None:
                held = self.deltas.swap_in(index, offsets)
            else:
                self.node.registry.swap(index)
                held = dict(offsets)
            [saved] = self.node.snapshot(index.name, index.model_version, offsets=held)
            return saved

    def _run(self) -> None:
        assert self.interval_s is not None
        while not self._stop.wait(self.interval_s):
            try:
                for s in self.take():
                    log.info("snapshot %s v%d: %d items", s.name, s.model_version, s.count)
            except Exception:
                log.exception("periodic snapshot failed")


class _DeltaMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.applied = Counter(
            "nrtrec_query_node_deltas_applied",
            "Item deltas applied to an index, by op",
            ["op"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "nrtrec_query_node_deltas_dead_lettered",
            "Item deltas sent to dead-letters, by reason",
            ["reason"],
            registry=registry,
        )
        self.delay = Histogram(
            "nrtrec_query_node_delta_delay_seconds",
            "From a delta's source_ts to its apply",
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.freshness = Gauge(
            "nrtrec_query_node_delta_lag_seconds",
            "Apply time minus source_ts of the last applied delta",
            registry=registry,
        )
        self.lag = Gauge(
            "nrtrec_query_node_delta_consumer_lag",
            "Records of item-deltas not applied yet, by partition",
            ["partition"],
            registry=registry,
        )


def _runs(items: list[_Delta]) -> Iterator[list[_Delta]]:
    """Consecutive items of one op."""
    run: list[_Delta] = []
    for item in items:
        if run and item.delta.op is not run[-1].delta.op:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _offset_text(offset: int) -> str:
    return {OFFSET_BEGINNING: "beginning", OFFSET_STORED: "committed"}.get(offset, str(offset))

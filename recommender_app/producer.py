"""The app's one Kafka producer, shared by click tracking and the impressions log.

One confluent-kafka ``Producer`` per app (one set of broker connections, one idempotent
sequence), made in the lifespan. A thread serves its delivery callbacks (``poll``), so
``produce`` only queues a record in librdkafka and returns: nobody on a request waits for it
unless they choose to (a click awaits its acknowledgement; an impression never does).

A ``SpoolSender`` sends what a spool on disk holds (records the broker did not take in time)
until Kafka has it, also what a killed app left behind; records that must not be waited for are
handed to it with ``later`` and written to the spool by its thread, never by a request.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel

from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.recommender_app.spool import EventSpool, SpoolFailed

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

OnDelivery = Callable[[KafkaError | None, Message], None]

# How often a spool is sent again while the broker does not take it, and at most how much a time.
DRAIN_EVERY_S = 1.0
SEND_PER_ROUND = 5_000


class AppProducer:
    def __init__(self, settings: Settings):
        app = settings.app
        # A record not acknowledged within this fails (and is spooled, sent again from there).
        self.message_timeout_s = max(5.0, 5 * app.event_timeout_s)
        # Set while librdkafka reports every broker down: waiting at shutdown would not help.
        self._brokers_down = False
        self._producer = Producer(
            producer_config(
                app.kafka_bootstrap or settings.kafka.bootstrap_servers,
                "nrtrec-app",
                # A click is sent at once: the caller waits for its acknowledgement.
                **{"linger.ms": 1},
                **{"message.timeout.ms": int(self.message_timeout_s * 1000)},
                error_cb=self._on_error,
            ),
            # librdkafka's own log lines (a broker that is not there yet) go to ours, not stderr.
            logger=log,
        )
        self._senders: list[SpoolSender] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="app-producer", daemon=True)
        self._poller.start()

    def produce(self, topic: str, key: str, value: bytes, on_delivery: OnDelivery) -> None:
        """Queue one record; ``on_delivery`` runs on the poll thread once the broker answered
        (or the record failed). Raises ``BufferError`` when librdkafka's queue is full and
        ``KafkaException`` when it refuses the record: never waits."""

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self._brokers_down = False
            on_delivery(error, message)

        self._producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)

    @property
    def brokers_down(self) -> bool:
        """Whether librdkafka last reported every broker down (and nothing was delivered since):
        a record queued now would only wait for its timeout."""
        return self._brokers_down

    def sender(
        self,
        topic: str,
        spool: EventSpool[R],
        *,
        resend_after_s: float,
        max_records: int | None = None,
    ) -> SpoolSender[R]:
        """A thread that sends ``spool`` to ``topic`` (each record ``resend_after_s`` after it
        was spooled at the earliest), closed with this producer. ``max_records`` bounds what
        ``later`` keeps (spool and backlog together); None: no bound."""
        sender = SpoolSender(self, topic, spool, resend_after_s, max_records)
        self._senders.append(sender)
        return sender

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def close(self) -> None:
        """Deliver what is queued (up to 5 s while a broker is up); what is left is purged, and
        its callbacks spool what must not be lost; then every sender writes its backlog."""
        for sender in self._senders:
            sender.stop()
        if not self._brokers_down:
            remaining = self._producer.flush(5.0)
            if remaining:
                log.warning("%d record(s) not delivered within 5 s at shutdown", remaining)
        # The purged records' callbacks (an error each) run in this flush, on this thread.
        self._producer.purge()
        self._producer.flush(1.0)
        for sender in self._senders:
            sender.write_backlog()
        self._stop.set()
        self._poller.join(timeout=5.0)


class SpoolSender(Generic[R]):
    """Sends every spooled record until the broker has it; each is done once acknowledged."""

    def __init__(
        self,
        producer: AppProducer,
        topic: str,
        spool: EventSpool[R],
        resend_after_s: float,
        max_records: int | None,
    ):
        self.topic = topic
        self.spool = spool
        self._producer = producer
        self._resend_after_s = resend_after_s
        self._backlog: deque[R] = deque()
        self._max_records = max_records
        self.dropped = 0
        self._in_flight: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{topic}-spool", daemon=True)
        self._thread.start()

    def later(self, record: R) -> bool:
        """Spool ``record`` from this sender's thread (within ``DRAIN_EVERY_S``), not the
        caller's; False (and counted in ``dropped``) when ``max_records`` are kept already."""
        # deque.append is atomic; the lengths may be off by a few under races, which is harmless.
        kept = len(self._backlog) + len(self.spool)
        if self._max_records is not None and kept >= self._max_records:
            self.dropped += 1
            return False
        self._backlog.append(record)
        return True

    def write_backlog(self) -> None:
        records: list[R] = []
        while self._backlog:
            records.append(self._backlog.popleft())
        try:
            self.spool.add_many(records)
        except SpoolFailed as e:
            self.dropped += len(records)
            log.error("%d record(s) for %s lost: %s", len(records), self.topic, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(DRAIN_EVERY_S):
            self.write_backlog()
            self._send()

    def _send(self) -> None:
        def settled(record_id: str, error: KafkaError | None) -> None:
            self._in_flight.discard(record_id)
            if error is None:
                self.spool.done(record_id)

        # A spooled record's own first try may still be in the producer's queue until it times
        # out (``resend_after_s``); sent again only after, it reaches Kafka twice only when
        # both were in flight. While every broker is down one record goes, as a probe: its
        # delivery says the broker is back; sending all of them would only queue them to fail.
        limit = 1 if self._producer.brokers_down else SEND_PER_ROUND
        for record in self.spool.pending(self._resend_after_s, limit):
            if record.id in self._in_flight:
                continue
            self._in_flight.add(record.id)
            try:
                self._producer.produce(
                    self.topic,
                    key=record.key,
                    value=record.value,
                    on_delivery=lambda err, _m, i=record.id: settled(i, err),
                )
            except (BufferError, KafkaException):
                self._in_flight.discard(record.id)
                break

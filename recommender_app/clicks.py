"""Click tracking: publish ``ClickEvent``s to the ``clicks`` topic, keyed by user id.

One confluent-kafka ``Producer`` per app, made in the lifespan. A thread serves its delivery
callbacks (``poll``); ``publish`` awaits the broker's acknowledgement of its own record, up to
``event_timeout_s``. When the broker does not acknowledge in time (it is restarting, say) the
event goes to the spool on disk (``spool.EventSpool``) and the caller gets its 202 all the same:
a thread sends what is spooled until Kafka has it, also what a killed app left behind. So an
accepted click is never lost, and a broker outage costs a delay, not an error. A spooled event
may reach Kafka twice (at least once); it keeps its ``event_id``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.recommender_app.spool import EventSpool, SpoolFailed
from nrtrec.schemas import ClickEvent, encode

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The event could be neither acknowledged by the broker nor spooled."""


@dataclass(frozen=True)
class Delivered:
    topic: str
    # None while the event waits in the spool for the broker.
    partition: int | None
    offset: int | None
    spooled: bool = False


# How often the spool is sent again while the broker does not take it.
DRAIN_EVERY_S = 1.0


class ClickPublisher:
    def __init__(self, settings: Settings):
        app = settings.app
        self.topic = settings.topics.clicks
        self.timeout_s = app.event_timeout_s
        self._message_timeout_s = max(5.0, 5 * app.event_timeout_s)
        self._producer = Producer(
            producer_config(
                app.kafka_bootstrap or settings.kafka.bootstrap_servers,
                "nrtrec-app",
                # A click is sent at once: the caller waits for its acknowledgement.
                **{"linger.ms": 1},
                # A record not acknowledged within this is spooled (and sent again from there).
                **{"message.timeout.ms": int(self._message_timeout_s * 1000)},
            ),
            # librdkafka's own log lines (a broker that is not there yet) go to ours, not stderr.
            logger=log,
        )
        self.spool = EventSpool(app.spool_path or settings.run_dir / "app-spool" / "clicks.jsonl")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="clicks-producer", daemon=True)
        self._poller.start()
        self._drainer = threading.Thread(target=self._drain, name="clicks-spool", daemon=True)
        self._drainer.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _drain(self) -> None:
        """Send every spooled event until the broker has it; each is done once acknowledged."""
        in_flight: set[str] = set()

        def settled(event_id: str, error: KafkaError | None) -> None:
            in_flight.discard(event_id)
            if error is None:
                self.spool.done(event_id)

        while not self._stop.wait(DRAIN_EVERY_S):
            # A spooled event's own record may still be in the producer's queue until it times
            # out; sent again only after, it reaches Kafka twice only when both were in flight.
            for event in self.spool.pending(older_than_s=self._message_timeout_s):
                if event.event_id in in_flight:
                    continue
                in_flight.add(event.event_id)
                try:
                    self._producer.produce(
                        self.topic,
                        key=event.key().encode(),
                        value=encode(event),
                        on_delivery=lambda err, _m, i=event.event_id: settled(i, err),
                    )
                except (BufferError, KafkaException):
                    in_flight.discard(event.event_id)
                    break

    async def publish(self, event: ClickEvent) -> Delivered:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Delivered] = loop.create_future()
        # Retrieves a late failure (after the caller gave up), which asyncio would log as
        # "never retrieved".
        done.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(error: KafkaError | None, message: Message) -> None:
            # Called on the poll thread.
            if error is None:
                self.spool.done(event.event_id)  # it was spooled while the broker was late
            if error is not None:
                outcome: Delivered | Exception = PublishFailed(f"the broker refused it: {error}")
            else:
                outcome = Delivered(message.topic(), message.partition(), message.offset())
            loop.call_soon_threadsafe(_resolve, done, outcome)

        try:
            self._producer.produce(
                self.topic, key=event.key().encode(), value=encode(event), on_delivery=settle
            )
        except (BufferError, KafkaException) as e:
            log.warning("click event not queued (%s); spooling it", e)
            return await self._spooled(event)
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
        except (TimeoutError, PublishFailed) as e:
            why = "no acknowledgement" if isinstance(e, TimeoutError) else str(e)
            log.warning(
                "click event %s: %s within %.1f s; spooled", event.event_id, why, self.timeout_s
            )
            return await self._spooled(event)

    async def _spooled(self, event: ClickEvent) -> Delivered:
        try:
            await asyncio.to_thread(self.spool.add, event)
        except SpoolFailed as e:
            raise PublishFailed(f"the broker did not take the event and {e}") from None
        return Delivered(self.topic, None, None, spooled=True)

    def close(self) -> None:
        remaining = self._producer.flush(5.0)
        if remaining:
            log.warning("%d click event(s) not delivered at shutdown", remaining)
        self._stop.set()
        self._poller.join(timeout=5.0)


def _resolve(done: asyncio.Future[Delivered], outcome: Delivered | Exception) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)

"""Click tracking: publish ``ClickEvent``s to the ``clicks`` topic, keyed by user id.

One confluent-kafka ``Producer`` per app, made in the lifespan. A thread serves its delivery
callbacks (``poll``); ``publish`` awaits the broker's acknowledgement of its own record, up to
``event_timeout_s``. Creating the producer does not connect, so the app starts without Kafka and
``POST /v1/events`` answers 503 until the broker is there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.schemas import ClickEvent, encode

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The broker did not acknowledge the event in time, or refused it."""


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class ClickPublisher:
    def __init__(self, settings: Settings):
        app = settings.app
        self.topic = settings.topics.clicks
        self.timeout_s = app.event_timeout_s
        self._producer = Producer(
            producer_config(
                app.kafka_bootstrap or settings.kafka.bootstrap_servers,
                "nrtrec-app",
                # A click is sent at once: the caller waits for its acknowledgement.
                **{"linger.ms": 1},
                # Bounds how long a record the caller gave up on (503) may still be delivered.
                **{"message.timeout.ms": int(max(5.0, 5 * app.event_timeout_s) * 1000)},
            ),
            # librdkafka's own log lines (a broker that is not there yet) go to ours, not stderr.
            logger=log,
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="clicks-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(self, event: ClickEvent) -> Delivered:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Delivered] = loop.create_future()
        # Retrieves a late failure (after the caller gave up), which asyncio would log as
        # "never retrieved".
        done.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(error: KafkaError | None, message: Message) -> None:
            # Called on the poll thread.
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
            raise PublishFailed(f"could not queue the event: {e}") from None
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
        except TimeoutError:
            raise PublishFailed(
                f"the broker did not acknowledge within {self.timeout_s:.1f} s"
            ) from None

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

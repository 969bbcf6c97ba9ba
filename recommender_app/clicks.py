"""Click tracking: publish ``ClickEvent``s to the ``clicks`` topic, keyed by user id.

The app's producer (``producer.AppProducer``) queues the record; ``publish`` awaits the broker's
acknowledgement of its own record, up to ``event_timeout_s``. When the broker does not
acknowledge in time (it is restarting, say) the event goes to the spool on disk
(``spool.EventSpool``) and the caller gets its 202 all the same: a ``SpoolSender`` thread sends
what is spooled until Kafka has it, also what a killed app left behind. So an accepted click is
never lost, and a broker outage costs a delay, not an error. A spooled event may reach Kafka
twice (at least once); it keeps its ``event_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message

from nrtrec.core.settings import Settings
from nrtrec.recommender_app.producer import AppProducer
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


class ClickPublisher:
    def __init__(self, settings: Settings, producer: AppProducer):
        app = settings.app
        self.topic = settings.topics.clicks
        self.timeout_s = app.event_timeout_s
        self._producer = producer
        self.spool = EventSpool(
            app.spool_path or settings.run_dir / "app-spool" / "clicks.jsonl",
            ClickEvent,
            lambda event: event.event_id,
            ClickEvent.key,
        )
        # The event's own record may still be queued until it times out: resent only after.
        producer.sender(self.topic, self.spool, resend_after_s=producer.message_timeout_s)

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
            # A closed loop (a record purged at shutdown): nobody is waiting for it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done, outcome)

        try:
            self._producer.produce(
                self.topic, key=event.key(), value=encode(event), on_delivery=settle
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


def _resolve(done: asyncio.Future[Delivered], outcome: Delivered | Exception) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)

"""The impressions log: every list of recommendations served to a user, on ``impressions``.

``log`` never waits and never fails the request: it queues the record in the app's producer
(``producer.AppProducer``, whose thread serves the broker's answers) and returns. A record the
broker does not take (it is away past ``message.timeout.ms``, or librdkafka's queue is full) is
handed to a ``SpoolSender``, whose thread writes it to a spool of its own on disk and sends it
until Kafka has it; while every broker is down the record goes there at once. Only a full spool
(``app.impressions_spool_max``) drops, and counts, one.
In normal operation each served list is one record; a record in flight when the app is shut
down may be sent again by the next app (at least once, same ``request_id``).
"""

from __future__ import annotations

import logging
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message

from nrtrec.core.settings import Settings
from nrtrec.recommender_app.metrics import Metrics
from nrtrec.recommender_app.producer import AppProducer
from nrtrec.recommender_app.spool import EventSpool
from nrtrec.schemas import Impression, encode

log = logging.getLogger(__name__)


class ImpressionLog:
    def __init__(self, settings: Settings, producer: AppProducer, metrics: Metrics):
        app = settings.app
        self.topic = settings.topics.impressions
        self._producer = producer
        self._metrics = metrics
        clicks_spool = app.spool_path or settings.run_dir / "app-spool" / "clicks.jsonl"
        self.spool = EventSpool(
            app.impressions_spool_path or clicks_spool.with_name("impressions.jsonl"),
            Impression,
            lambda impression: impression.request_id,
            Impression.key,
        )
        # A record reaches the spool only after its own try failed: resend it at the next round.
        self._sender = producer.sender(
            self.topic,
            self.spool,
            resend_after_s=0.0,
            max_records=app.impressions_spool_max,
        )

    def log(self, impression: Impression) -> None:
        """Queue ``impression`` for the broker; returns at once."""
        if self._producer.brokers_down:
            # Queued, it would wait for its timeout, then come here all the same; a broker that
            # is back takes it from the spool (the sender's probe finds out).
            self._later(impression)
            return
        try:
            self._producer.produce(
                self.topic,
                key=impression.key(),
                value=encode(impression),
                on_delivery=partial(self._settled, impression),
            )
        except (BufferError, KafkaException) as e:
            log.debug("impression %s not queued (%s); spooling it", impression.request_id, e)
            self._later(impression)

    def _settled(self, impression: Impression, error: KafkaError | None, _: Message) -> None:
        # On the producer's poll thread.
        if error is None:
            self._metrics.impressions.labels(impression.arm, "delivered").inc()
            return
        self._later(impression)

    def _later(self, impression: Impression) -> None:
        if self._sender.later(impression):
            self._metrics.impressions.labels(impression.arm, "spooled").inc()
        else:
            self._metrics.impressions.labels(impression.arm, "dropped").inc()
            log.warning("impression %s dropped: the spool is full", impression.request_id)

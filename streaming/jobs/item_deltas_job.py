"""Item-embedding job: ``listings`` -> item tower -> ``item-deltas`` (upserts and deletes).

Keyed by item: the listing's latest event waits in keyed state and in an in-memory batch;
a flush (``streaming.flush_size`` items or the ``streaming.flush_ms`` timer) encodes the
upserts (Triton, batched) and publishes one delta per served model version, keyed by item id
with Kafka's murmur2 partitioner, the one the query-node shards follow.
"""

from __future__ import annotations

import logging

from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from nrtrec.schemas import ListingEvent, Topic
from nrtrec.streaming.jobs.common import (
    DEAD_LETTERS,
    ParseEvents,
    dead_letter_sink,
    environment,
    from_kafka,
    job_arguments,
    kafka_source,
    load_settings,
)

log = logging.getLogger("nrtrec.streaming.item_deltas")


class PublishItemDeltas(KeyedProcessFunction):
    def __init__(self, settings):
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from confluent_kafka import Producer

        from nrtrec.core.kafka import producer_config
        from nrtrec.inference.client import open_encoder
        from nrtrec.streaming.batching import KeyedBatcher
        from nrtrec.streaming.item_deltas import ItemDeltaPublisher

        s = self.settings
        # The listing not yet published; cleared once its delta is out.
        self.pending_state = runtime_context.get_state(
            ValueStateDescriptor("pending-listing", Types.STRING())
        )
        self.batcher = KeyedBatcher(max_size=s.streaming.flush_size)
        producer = Producer(
            producer_config(s.kafka.bootstrap_servers, "nrtrec-item-deltas", **{"linger.ms": 2})
        )
        self.publisher = ItemDeltaPublisher(
            open_encoder(s), producer, s.topics.item_deltas, s.topics.listings
        )

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        from nrtrec.streaming.batching import timer_at

        _, event_json = value
        listing = ListingEvent.model_validate_json(event_json)
        self.pending_state.update(event_json)
        now = ctx.timer_service().current_processing_time()
        ctx.timer_service().register_processing_time_timer(
            timer_at(now, self.settings.streaming.flush_ms)
        )
        # A batch may be flushed from another key's context; this key's pending state is then
        # cleared by its own timer (below), never by someone else's.
        batch = self.batcher.add(listing.item_id, listing)
        if batch:
            yield from self._flush(batch)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        from nrtrec.streaming.batching import ORPHAN

        outcome = self.batcher.on_timer(ctx.get_current_key())
        if outcome is ORPHAN:
            pending = self.pending_state.value()
            if pending:  # restored while this listing waited in a batch: publish it now
                listing = ListingEvent.model_validate_json(pending)
                yield from self._flush({listing.item_id: listing})
        elif outcome:
            yield from self._flush(outcome)
        self.pending_state.clear()

    def _flush(self, batch):
        report = self.publisher.publish(batch)
        for dead in report.dead_letters:
            yield dead.model_dump_json()

    def close(self) -> None:
        self.publisher.producer.flush(10)
        self.publisher.encoder.close()


def main(argv: list[str] | None = None) -> None:
    parser = job_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--listings-offsets",
        help="bulk.json of a bulk run: start at the listings offsets it recorded",
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.settings)
    env = environment(settings, args.jars, args.name)

    start = None
    if args.listings_offsets:
        from nrtrec.streaming.bulk import read_listings_offsets

        start = read_listings_offsets(args.listings_offsets)
    listings = from_kafka(env, kafka_source(settings, Topic.LISTINGS, start), "listings")
    parsed = listings.process(
        ParseEvents(Topic.LISTINGS, settings.topics.listings),
        output_type=Types.TUPLE([Types.STRING(), Types.STRING()]),
    ).name("parse-listings")
    failed = (
        parsed.key_by(lambda kv: kv[0], key_type=Types.STRING())
        .process(PublishItemDeltas(settings), output_type=Types.STRING())
        .name("item-deltas")
    )
    (
        parsed.get_side_output(DEAD_LETTERS)
        .union(failed)
        .sink_to(dead_letter_sink(settings))
        .name("dead-letters")
    )
    if args.plan_only:  # checks the job graph without a cluster (tests)
        print(env.get_execution_plan())
        return
    env.execute(args.name)


if __name__ == "__main__":
    main()

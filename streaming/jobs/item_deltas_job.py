"""Item-embedding job: ``listings`` -> item tower -> ``item-deltas`` (upserts and deletes).

Keyed by item: the listing's latest event waits in keyed state and in an in-memory batch;
a flush (``streaming.flush_size`` items or the ``streaming.flush_ms`` timer) encodes the
upserts (Triton, batched) and publishes one delta per served model version, keyed by item id
with Kafka's murmur2 partitioner, the one the query-node shards follow.

Each item's ``EncodedText`` (the digest of the text it encoded and the vectors, per version)
stays in keyed state, so an update that changes only attributes (price, location) is
published with the vectors it had, without the item tower (``streaming.encoded_texts`` says
why state and not a look-up). A batch is flushed from any key's context, so the new state of a
key is written at that key's own timer, which always fires after its flush.
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
        # What the item's text encoded to (EncodedText.to_state); absent: encode.
        self.encoded_state = runtime_context.get_state(
            ValueStateDescriptor("encoded-text", Types.STRING())
        )
        # Read from each key's state when it joins a batch, and the published result waiting
        # for that key's timer to be written back.
        self.known: dict = {}
        self.published: dict = {}
        # Flink metrics (REST, web UI): (listing, version) pairs encoded, and re-used.
        metrics = runtime_context.get_metrics_group()
        self.encoded_counter = metrics.counter("item_vectors_encoded")
        self.reused_counter = metrics.counter("item_vectors_reused")
        self.batcher = KeyedBatcher(max_size=s.streaming.flush_size)
        producer = Producer(
            producer_config(s.kafka.bootstrap_servers, "nrtrec-item-deltas", **{"linger.ms": 2})
        )
        self.publisher = ItemDeltaPublisher(
            open_encoder(s), producer, s.topics.item_deltas, s.topics.listings
        )

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        from nrtrec.schemas import ListingOp
        from nrtrec.streaming.batching import timer_at
        from nrtrec.streaming.encoded_texts import EncodedText

        _, event_json = value
        listing = ListingEvent.model_validate_json(event_json)
        self.pending_state.update(event_json)
        if listing.op is ListingOp.DELETE:
            self.encoded_state.clear()
            self.known.pop(listing.item_id, None)
            # An upsert flushed before, whose state waits for this key's timer, is void now.
            self.published.pop(listing.item_id, None)
        else:
            known = EncodedText.from_state(self.encoded_state.value())
            if known is not None:
                self.known[listing.item_id] = known
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
        from nrtrec.streaming.encoded_texts import EncodedText

        key = ctx.get_current_key()
        outcome = self.batcher.on_timer(key)
        if outcome is ORPHAN:
            pending = self.pending_state.value()
            if pending:  # restored while this listing waited in a batch: publish it now
                listing = ListingEvent.model_validate_json(pending)
                known = EncodedText.from_state(self.encoded_state.value())
                if known is not None:
                    self.known[key] = known
                yield from self._flush({listing.item_id: listing})
        elif outcome:
            yield from self._flush(outcome)
        self.pending_state.clear()
        encoded = self.published.pop(key, None)
        if encoded is not None:
            self.encoded_state.update(encoded.to_state())

    def _flush(self, batch):
        known = {item: self.known.pop(item) for item in batch if item in self.known}
        report = self.publisher.publish(batch, encoded=known)
        self.published.update(report.encoded)
        self.encoded_counter.inc(report.encoded_count)
        self.reused_counter.inc(report.reused_count)
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

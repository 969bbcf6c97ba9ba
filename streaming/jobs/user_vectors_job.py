"""User-embedding job: ``clicks`` -> each user's recent items -> user tower -> user-vector store.

Keyed by user: the last ``inference.max_history`` items live in keyed state (cleared
``streaming.history_ttl_s`` after a user's last click, so users who never return are forgotten).
Each click updates the history and joins an
in-memory batch; a batch is flushed when it holds ``streaming.flush_size`` users or when the
flush timer fires (``streaming.flush_ms``). A flush looks up the items' vectors (gateway),
runs the user tower (Triton, batched) and writes each user's vector with its model version,
and adds the batch's views to the store's popularity, each on its click's UTC day.
"""

from __future__ import annotations

import logging
from collections import Counter

from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from nrtrec.schemas import ClickEvent, Topic
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

log = logging.getLogger("nrtrec.streaming.user_vectors")


class UpdateUserVectors(KeyedProcessFunction):
    def __init__(self, settings):
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        from nrtrec.inference.client import open_encoder
        from nrtrec.query_node.client import BlockingQueryClient
        from nrtrec.streaming.batching import KeyedBatcher
        from nrtrec.streaming.item_lookup import ItemVectorLookup
        from nrtrec.streaming.serving_versions import ServingVersions
        from nrtrec.streaming.user_vectors import UserVectorWriter
        from nrtrec.user_store import open_store

        s = self.settings
        # Flink's own state TTL cannot be used: in thread mode PyFlink 2.2 builds the TTL config
        # through a Py4J gateway that the embedded interpreter tries (and fails) to launch.
        # The history instead carries when it was last touched, and a cleanup timer per user
        # clears it ``history_ttl_s`` after the last click (timers are checkpointed too).
        self.history_state = runtime_context.get_state(
            ValueStateDescriptor("history", Types.STRING())
        )
        self.touched_state = runtime_context.get_state(
            ValueStateDescriptor("touched-ms", Types.LONG())
        )
        self.ttl_ms = s.streaming.history_ttl_s * 1000
        self.batcher = KeyedBatcher(max_size=s.streaming.flush_size)
        # Views by (UTC day of the click, item id): popularity is counted per day.
        self.views: Counter[tuple[int, str]] = Counter()
        # Four tries of up to 2 s each: a gateway restarting is waited for, not failed over.
        client = BlockingQueryClient.of(s, timeout_s=8.0, retries=3)
        self.items = ItemVectorLookup(
            client,
            s.query_node.index_name,
            ttl_s=s.streaming.item_cache_ttl_s,
            partial_wait_s=s.streaming.item_lookup_wait_s,
        )
        encoder = open_encoder(s)
        versions = ServingVersions(
            encoder,
            BlockingQueryClient.of(s, timeout_s=8.0, retries=3),
            s.query_node.index_name,
            ttl_s=s.streaming.versions_ttl_s,
            pinned=s.inference.model_version,
        )
        self.writer = UserVectorWriter(encoder, open_store(s), self.items, versions)

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        from nrtrec.streaming.batching import timer_at
        from nrtrec.streaming.history import History
        from nrtrec.user_store.common import day_of

        _, event_json = value
        click = ClickEvent.model_validate_json(event_json)
        history = History.from_json(self.history_state.value()).with_click(
            click, self.settings.inference.max_history
        )
        self.history_state.update(history.to_json())
        self.views[(day_of(click.ts), click.item_id)] += 1
        now = ctx.timer_service().current_processing_time()
        self.touched_state.update(now)
        ctx.timer_service().register_processing_time_timer(now + self.ttl_ms)
        ctx.timer_service().register_processing_time_timer(
            timer_at(now, self.settings.streaming.flush_ms)
        )
        batch = self.batcher.add(click.user_id, history)
        if batch:
            self._flush(batch)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        from nrtrec.streaming.batching import ORPHAN
        from nrtrec.streaming.history import History

        touched = self.touched_state.value()
        if touched is not None and timestamp >= touched + self.ttl_ms:
            self.history_state.clear()  # the user has been away longer than the TTL
            self.touched_state.clear()
            return iter(())
        outcome = self.batcher.on_timer(ctx.get_current_key())
        if outcome is ORPHAN:
            # Restored from a checkpoint taken while this user waited in a batch: redo it.
            history = History.from_json(self.history_state.value())
            if history.items:
                self._flush({ctx.get_current_key(): history})
        elif outcome:
            self._flush(outcome)
        return iter(())

    def _flush(self, batch) -> None:
        reports = self.writer.write(batch)
        views, self.views = self.views, Counter()
        self.writer.count_views(views)
        log.debug("user vectors: %s", reports)

    def close(self) -> None:
        self.writer.store.close()
        self.writer.encoder.close()
        self.writer.versions.client.close()
        self.items.close()


def main(argv: list[str] | None = None) -> None:
    args = job_arguments(__doc__.splitlines()[0]).parse_args(argv)
    settings = load_settings(args.settings)
    env = environment(settings, args.jars, args.name)

    clicks = from_kafka(env, kafka_source(settings, Topic.CLICKS), "clicks")
    parsed = clicks.process(
        ParseEvents(Topic.CLICKS, settings.topics.clicks, settings.max_clock_skew_s),
        output_type=Types.TUPLE([Types.STRING(), Types.STRING()]),
    ).name("parse-clicks")
    (
        parsed.key_by(lambda kv: kv[0], key_type=Types.STRING())
        .process(UpdateUserVectors(settings), output_type=Types.STRING())
        .name("user-vectors")
    )
    parsed.get_side_output(DEAD_LETTERS).sink_to(dead_letter_sink(settings)).name("dead-letters")
    if args.plan_only:  # checks the job graph without a cluster (tests)
        print(env.get_execution_plan())
        return
    env.execute(args.name)


if __name__ == "__main__":
    main()

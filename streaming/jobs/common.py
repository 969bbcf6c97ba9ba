"""What both jobs share: settings hand-over, the Kafka source, the dead-letter sink."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
    KafkaTopicPartition,
)
from pyflink.datastream.functions import ProcessFunction
from pyflink.datastream.output_tag import OutputTag

from nrtrec.core.settings import Settings
from nrtrec.schemas import DeadLetter, Topic

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())


def job_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--settings", required=True, help="JSON of nrtrec Settings")
    parser.add_argument("--jars", nargs="+", required=True, help="Kafka connector jars")
    parser.add_argument("--name", required=True, help="the Flink job name")
    parser.add_argument("--plan-only", action="store_true", help="print the plan, run nothing")
    return parser


def load_settings(path: str) -> Settings:
    # The submitter writes its Settings to a file (``write_settings_file``): the job must see
    # exactly the same ports, token and store, whatever the TaskManager's environment holds.
    return Settings.from_file(path)


def environment(settings: Settings, jars: list[str], name: str) -> StreamExecutionEnvironment:
    cfg = settings.streaming
    config = Configuration()
    for key, value in {
        "execution.checkpointing.interval": f"{cfg.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.min-pause": f"{cfg.checkpoint_interval_ms // 2} ms",
        "execution.checkpointing.dir": checkpoint_dir(settings, name).as_uri(),
        # Kept when the job is cancelled or fails for good: `nrtrec` restarts from the newest.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        # A transient failure (Triton or the store away) restarts from the last checkpoint.
        "restart-strategy.type": "exponential-delay",
    }.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*(Path(j).resolve().as_uri() for j in jars))
    env.set_parallelism(cfg.parallelism)
    env.set_max_parallelism(cfg.max_parallelism)
    return env


def checkpoint_dir(settings: Settings, job_name: str) -> Path:
    base = settings.streaming.checkpoint_dir or (settings.run_dir / "checkpoints")
    return (base / job_name).resolve()


def kafka_source(
    settings: Settings, topic: Topic, start: dict[int, int] | None = None
) -> KafkaSource:
    """Values of ``topic``; without a checkpoint it starts at ``start`` (partition -> offset),
    else at the consumer group's committed offsets, else at the beginning."""
    name = settings.topics.of(topic)
    if start:
        offsets = KafkaOffsetsInitializer.offsets(
            {KafkaTopicPartition(name, p): o for p, o in start.items()},
            KafkaOffsetResetStrategy.EARLIEST,
        )
    else:
        offsets = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    return (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_topics(name)
        .set_group_id(f"{settings.streaming.consumer_group}-{name}")
        .set_starting_offsets(offsets)
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("commit.offsets.on.checkpoint", "true")
        .build()
    )


def from_kafka(env: StreamExecutionEnvironment, source: KafkaSource, name: str):
    # Processing-time timers drive the batching; event time plays no part, so no watermarks.
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name)


def dead_letter_sink(settings: Settings) -> KafkaSink:
    return (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(settings.topics.dead_letters)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        # Delivered before each checkpoint completes: a restart never loses a dead letter.
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )


class ParseEvents(ProcessFunction):
    """Values -> (key, event JSON); invalid ones to the dead-letter side output."""

    def __init__(self, topic: Topic, source_topic: str, max_clock_skew_s: float | None = None):
        self.topic = topic
        self.source_topic = source_topic
        self.max_clock_skew_s = max_clock_skew_s

    def process_element(self, value, ctx):
        from nrtrec.streaming.parsing import parse

        event = parse(self.topic, value, self.source_topic, self.max_clock_skew_s)
        if isinstance(event, DeadLetter):
            yield DEAD_LETTERS, event.model_dump_json()
        else:
            yield event.key(), event.model_dump_json()

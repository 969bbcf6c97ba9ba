"""A minimal PyFlink DataStream job for the Flink integration test: Kafka -> upper-case -> Kafka.

Submitted to the local cluster with ``bin/flink run -py``; run as a script, never imported by
pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--in-topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--jars", nargs="+", required=True, help="connector jar paths")
    parser.add_argument("--name", default="nrtrec-test-uppercase")
    args = parser.parse_args(argv)

    env = StreamExecutionEnvironment.get_execution_environment()
    env.add_jars(*(Path(j).resolve().as_uri() for j in args.jars))
    env.set_parallelism(1)
    env.enable_checkpointing(5_000)

    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_topics(args.in_topic)
        .set_group_id(args.group)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(args.out_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-in")
        .map(lambda value: value.upper(), output_type=Types.STRING())
        .name("upper-case")
        .sink_to(sink)
        .name("kafka-out")
    )
    env.execute(args.name)


if __name__ == "__main__":
    main()

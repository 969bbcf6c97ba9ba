"""Fixtures of the query-node tests that need a broker: the session's Kafka, topics of a
test's own."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.query_node.kafka_helpers import PARTITIONS, Topics
from tests.stack import Stack


@pytest.fixture(scope="module")
def bootstrap(stack: Stack) -> str:
    return stack.kafka()


@pytest.fixture
def topics(bootstrap: str) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    t = Topics(
        f"test-deltas-{suffix}", f"test-dead-letters-{suffix}", f"test-declarations-{suffix}"
    )
    # Kept referenced until the futures resolve: a collected client fails them with _DESTROY.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)
            for name in vars(t).values()
        ]
    )
    for future in futures.values():
        future.result(15)
    return t

"""The broker the local runner starts: contract topics, consumer groups, idempotent start."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from nrtrec.core.kafka import SINGLE_PARTITION, TOPIC_CONFIGS
from nrtrec.core.settings import KafkaSettings, Settings
from nrtrec.deploy import LocalRunner, PortInUse
from nrtrec.deploy.services.kafka import KafkaService
from nrtrec.schemas.topics import Topic
from tests.conftest import free_port
from tests.stack import Stack
from tests.waiting import collect

pytestmark = pytest.mark.integration


def _skip_under_docker(stack: Stack) -> None:
    if stack.docker:
        pytest.skip("tests the local runner's broker; this session uses testcontainers")


def _poll(
    consumer: Consumer, seconds: float, done: Callable[[list[Message]], bool] = lambda _: False
) -> list[Message]:
    """Messages polled for ``seconds``, or until ``done(messages)``."""
    return collect(consumer, done, seconds)


@pytest.fixture
def topic(stack: Stack) -> str:
    """A topic of the test's own, so that jobs reading the contract topics never see its data."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.kafka()})
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(10)
    return name


def test_contract_topics_exist_with_configured_partitions_and_retention(stack: Stack) -> None:
    _skip_under_docker(stack)
    admin = AdminClient({"bootstrap.servers": stack.kafka()})
    metadata = admin.list_topics(timeout=10)
    for t in Topic:
        assert t.value in metadata.topics, f"{t.value} missing"
        expected = 1 if t in SINGLE_PARTITION else stack.settings.kafka.partitions
        assert len(metadata.topics[t.value].partitions) == expected, t
    # Compacted where a reader needs every key's newest record, from the beginning.
    resources = [ConfigResource(ResourceType.TOPIC, t.value) for t in Topic]
    for resource, future in admin.describe_configs(resources).items():
        configs = future.result(10)
        wanted = TOPIC_CONFIGS[Topic(resource.name)]
        assert {k: configs[k].value for k in wanted} == wanted, resource.name


def test_consumer_group_resumes_from_committed_offsets(stack: Stack, topic: str) -> None:
    bootstrap = stack.kafka()
    n = 60
    failures: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sent = [(f"user-{i % 7}".encode(), f"event-{i}".encode()) for i in range(n)]
    for key, value in sent:
        producer.produce(
            topic, key=key, value=value, on_delivery=lambda err, _: err and failures.append(err)
        )
    assert producer.flush(15) == 0
    assert failures == []

    group = f"group-{uuid.uuid4().hex[:8]}"
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        # Without honoured commits the second consumer would re-read everything from here.
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    first = Consumer(config)
    first.subscribe([topic])
    got = _poll(first, 30, lambda got: len(got) >= n)
    assert sorted((m.key(), m.value()) for m in got) == sorted(sent)
    # One key, one partition: per-key order is what the streaming jobs rely on.
    for key in {k for k, _ in sent}:
        assert [m.value() for m in got if m.key() == key] == [v for k, v in sent if k == key]
    first.commit(asynchronous=False)
    first.close()

    assigned: list[TopicPartition] = []
    second = Consumer(config)
    second.subscribe([topic], on_assign=lambda _, parts: assigned.extend(parts))
    try:
        late = _poll(second, 15, lambda _: bool(assigned))
        assert assigned, "the second consumer never joined the group"
        # Fetching starts right after the assignment; re-delivered messages would show by now.
        late += _poll(second, 2)
        assert late == []
        committed = second.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed) == n
        # It is live, and reads exactly what came after the commit.
        producer.produce(topic, key=b"user-0", value=b"after-commit")
        assert producer.flush(10) == 0
        fresh = _poll(second, 10, lambda got: len(got) >= 1) + _poll(second, 1)
        assert [m.value() for m in fresh] == [b"after-commit"]
    finally:
        second.close()


def test_second_up_is_a_no_op(stack: Stack) -> None:
    _skip_under_docker(stack)
    stack.kafka()
    settings = stack.local_settings("kafka")
    runner = LocalRunner(settings, [KafkaService(settings)])
    assert runner.up() is False
    [status] = runner.status()
    assert status.healthy and status.url == settings.kafka.bootstrap_servers


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            run_dir=tmp_path / "run",
            cache_dir=tmp_path / "cache",
            kafka=KafkaSettings(port=port, controller_port=free_port()),
        )
        with pytest.raises(PortInUse) as excinfo:
            LocalRunner(settings, [KafkaService(settings)]).up()
    assert (excinfo.value.service, excinfo.value.port) == ("kafka", port)

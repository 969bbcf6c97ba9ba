"""The local runner's Kafka cluster (``kafka.brokers = 3``): three KRaft nodes, our topics with
three copies and two in sync, and a broker killed with SIGKILL and held down while producers
and consumers go on: nothing acknowledged is lost and nothing waits for it to come back."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import KafkaSettings, Settings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.kafka import KafkaService
from tests.conftest import free_port_run
from tests.waiting import collect, wait_until

pytestmark = pytest.mark.integration

BROKERS = 3
VICTIM = "kafka-1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRunner]:
    port = free_port_run(2 * BROKERS)  # node i: port + 2i, its controller port + 2i + 1
    settings = Settings(
        run_dir=tmp_path_factory.mktemp("kafka-cluster") / "run",
        kafka=KafkaSettings(port=port, controller_port=port + 1, brokers=BROKERS, heap="384m"),
    )
    runner = LocalRunner(settings, [KafkaService(settings)])
    runner.up()
    try:
        yield runner
    finally:
        runner.down()


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers, "log_level": 3})


def test_status_has_a_row_per_node(cluster: LocalRunner) -> None:
    rows = {s.name: s for s in cluster.status()}
    assert sorted(rows) == [f"kafka-{i}" for i in range(BROKERS)]
    assert all(s.healthy for s in rows.values()), rows
    cfg = cluster.settings.kafka
    assert [rows[f"kafka-{i}"].url for i in range(BROKERS)] == [
        f"{cfg.host}:{p}" for p in cfg.broker_ports
    ]


def test_contract_topics_have_three_copies_and_two_in_sync(cluster: LocalRunner) -> None:
    settings = cluster.settings
    admin = _admin(settings)
    names = list(settings.topics.all().values())
    topics = admin.list_topics(timeout=10).topics
    for name in names:
        copies = {len(p.replicas) for p in topics[name].partitions.values()}
        assert copies == {3}, (name, copies)
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in names]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result()["min.insync.replicas"].value == "2", resource


def _stream(settings: Settings, topic: str, stop: threading.Event, acked: list[str]) -> None:
    """Records to ``topic`` until ``stop``, as fast as acknowledgements come (acks=all)."""
    producer = Producer(producer_config(settings.kafka.bootstrap_servers, "cluster-test"))

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            acked.append(message.value().decode())

    n = 0
    while not stop.is_set():
        producer.produce(
            topic, key=str(n % 16).encode(), value=f"r{n}".encode(), on_delivery=delivered
        )
        producer.poll(0.01)
        n += 1
    assert producer.flush(60) == 0


def test_a_broker_killed_and_held_down_stops_nothing_and_loses_nothing(
    cluster: LocalRunner,
) -> None:
    settings = cluster.settings
    topic = settings.topics.clicks
    acked: list[str] = []
    stop = threading.Event()
    producer = threading.Thread(target=_stream, args=(settings, topic, stop, acked), daemon=True)
    producer.start()
    try:
        wait_until("records acknowledged before the kill", lambda: len(acked) >= 200, 60)
        pid = cluster.supervisor.info()[VICTIM].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        cluster.supervisor.stop(VICTIM)  # held down: nothing may wait for it
        at_kill = len(acked)
        # Nothing stops: writes keep being acknowledged by the two brokers left.
        wait_until(
            "records acknowledged after the kill", lambda: len(acked) >= at_kill + 500, 120,
            diagnose=lambda: f"{len(acked) - at_kill} acknowledged since the kill",
        )  # fmt: skip
    finally:
        stop.set()
        producer.join(90)
    assert not producer.is_alive()
    assert not cluster.supervisor.info()[VICTIM].alive, "the broker came back during the test"
    # A client that starts now bootstraps from the brokers left and reads every copy.
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"cluster-test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    consumer.subscribe([topic])
    try:
        wanted = set(acked)
        seen: set[str] = set()

        def every_record(messages: list[Message]) -> bool:
            seen.update(m.value().decode() for m in messages if m.error() is None)
            return wanted <= seen

        collect(consumer, every_record, 120)
    finally:
        consumer.close()
    lost = wanted - seen
    assert not lost, f"{len(lost)} of {len(wanted)} acknowledged records lost: {sorted(lost)[:5]}"
    # Back in: the held-down node rejoins and the cluster is whole again.
    cluster.supervisor.start(VICTIM)
    wait_until(
        f"{VICTIM} back and healthy",
        lambda: all(s.healthy for s in cluster.status()), 180,
        diagnose=lambda: str(cluster.status()),
    )  # fmt: skip

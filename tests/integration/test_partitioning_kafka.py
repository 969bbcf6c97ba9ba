"""``partition_for`` places keys where the real clients do: librdkafka's ``murmur2_random`` on the
broker the tests start, and the Java client's own default partitioner."""

from __future__ import annotations

import random
import shutil
import string
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from nrtrec.deploy.services.kafka import KafkaService
from nrtrec.schemas.partitioning import PRODUCER_CONFIG, partition_for
from tests.stack import Stack

pytestmark = pytest.mark.integration

PARTITIONS = 12


def _keys(n: int = 200, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_é日"
    keys = [f"item-{i}" for i in range(n // 2)]
    keys += ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(n - len(keys))]
    return keys


def _produce(bootstrap: str, topic: str, keys: list[str], config: dict[str, str]) -> dict[str, int]:
    """The partition each key's record was delivered to, from the delivery reports."""
    placed: dict[str, int] = {}
    errors: list[str] = []

    def report(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            placed[msg.key().decode()] = msg.partition()

    producer = Producer({"bootstrap.servers": bootstrap, **config})
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"{}", on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0, "records left undelivered"
    assert not errors, errors
    return placed


def test_librdkafka_murmur2_random_places_keys_like_partition_for(stack: Stack) -> None:
    bootstrap = stack.kafka()
    topic = f"test-partitioning-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
    admin.create_topics([new])[topic].result(30)
    keys = _keys()

    placed = _produce(bootstrap, topic, keys, PRODUCER_CONFIG)
    assert placed == {key: partition_for(key, PARTITIONS) for key in keys}

    # Why producers must set the partitioner: librdkafka's default (CRC32) places keys elsewhere.
    default = _produce(bootstrap, topic, keys, {})
    assert sum(default[k] != placed[k] for k in keys) > len(keys) // 2


JAVA_PARTITIONER = """
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;

public class Partitions {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String key;
        while ((key = in.readLine()) != null) {
            byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
            System.out.println(BuiltInPartitioner.partitionForKey(bytes, n));
        }
    }
}
"""


def test_java_client_default_partitioner_agrees(stack: Stack, tmp_path: Path) -> None:
    if stack.docker or shutil.which("java") is None:
        pytest.skip("needs java and the Kafka jars that the local runner installs")
    stack.kafka()  # installs the jars
    jars = KafkaService(stack.settings).jars_dir
    source = tmp_path / "Partitions.java"
    source.write_text(JAVA_PARTITIONER)
    keys = ["", *_keys(seed=11)]
    result = subprocess.run(
        ["java", "-cp", f"{jars}/*", str(source), str(PARTITIONS)],
        input="\n".join(keys) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=True,
    )
    java = [int(line) for line in result.stdout.split()]
    assert java == [partition_for(key, PARTITIONS) for key in keys]

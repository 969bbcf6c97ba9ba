from pathlib import Path

from nrtrec.core.settings import KafkaSettings, Settings


def test_environment_overrides_nested_settings(monkeypatch):
    monkeypatch.setenv("NRTREC_KAFKA__PORT", "19092")
    monkeypatch.setenv("NRTREC_RUN_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("NRTREC_TOKEN", "s3cret")
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.run_dir == Path("/tmp/elsewhere")
    assert s.token == "s3cret"


def test_defaults_bind_loopback_only():
    s = Settings()
    hosts = {s.kafka.host, s.flink.host, s.triton.host, s.redis.host, s.couchbase.host}
    assert hosts == {"127.0.0.1"}


def test_a_kafka_cluster_interleaves_its_ports_and_keeps_two_of_three_copies():
    one = KafkaSettings(port=9092, controller_port=9093)
    assert one.bootstrap_servers == "127.0.0.1:9092"
    assert (one.replication_factor, one.min_insync_replicas) == (1, 1)
    three = KafkaSettings(port=9092, controller_port=9093, brokers=3)
    assert three.broker_ports == [9092, 9094, 9096]
    assert three.controller_ports == [9093, 9095, 9097]
    assert not set(three.broker_ports) & set(three.controller_ports)
    assert three.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert (three.replication_factor, three.min_insync_replicas) == (3, 2)
    five = KafkaSettings(brokers=5)
    assert (five.replication_factor, five.min_insync_replicas) == (3, 2)

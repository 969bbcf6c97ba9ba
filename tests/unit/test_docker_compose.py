from pathlib import Path

import yaml

from nrtrec.core.settings import Settings
from nrtrec.deploy.services import default_services

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_local_runner_service_has_a_compose_counterpart():
    labelled = {
        svc.get("labels", {}).get("nrtrec.local-runner") for svc in _compose()["services"].values()
    }
    missing = {s.name for s in default_services(Settings())} - labelled
    assert not missing, f"docker-compose.yml has no service labelled for {sorted(missing)}"


def test_compose_services_are_well_formed():
    services = _compose()["services"]
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        dockerfile = svc.get("build", {}).get("dockerfile")
        if dockerfile:
            assert (ROOT / dockerfile).is_file(), f"{name}: {dockerfile} does not exist"


def test_compose_refuses_to_start_without_a_token_and_locks_model_control():
    """``${VAR:?message}``: compose stops with the message when VAR is unset or empty."""
    services = _compose()["services"]
    writers = ["gateway", *(n for n in services if n.startswith("query-node-"))]
    assert all("NRTREC_TOKEN" in services[n]["environment"] for n in writers)
    for name, svc in services.items():
        token = svc.get("environment", {}).get("NRTREC_TOKEN")
        if token is not None:
            assert token.startswith("${NRTREC_TOKEN:?"), f"{name} defaults NRTREC_TOKEN: {token}"
    triton = services["triton"]["command"]
    for option in ("--http-restricted-api=", "--grpc-restricted-protocol="):
        assert option + "model-repository," in triton
    assert "${NRTREC_TRITON_ADMIN_KEY:?" in triton


def test_compose_prometheus_records_the_local_runners_rules():
    import json

    from nrtrec.deploy.services.prometheus import PrometheusService

    committed = json.loads((ROOT / "deploy/docker/nrtrec-rules.yml").read_text())
    assert committed == PrometheusService.recording_rules(), (
        "regenerate deploy/docker/nrtrec-rules.yml"
    )


def _cluster_mode() -> Settings:
    """The local runner's cluster mode, as the compose file's header names it."""
    from nrtrec.core.settings import FlinkSettings, KafkaSettings, StreamingSettings

    return Settings(
        kafka=KafkaSettings(brokers=3),
        flink=FlinkSettings(taskmanagers=2),
        streaming=StreamingSettings(parallelism=2),
        user_store={"backend": "couchbase"},
    )


def _flink_properties(svc: dict) -> dict[str, str]:
    return yaml.safe_load(svc["environment"]["FLINK_PROPERTIES"])


def test_compose_runs_every_member_of_the_local_runners_cluster_mode():
    """A compose service for each row `nrtrec status` shows in cluster mode: kafka-0..2, the
    JobManager and each TaskManager, every query-node replica."""
    cluster = _cluster_mode()
    rows = {row for service in default_services(cluster) for row in service.members()}
    labelled = {
        svc.get("labels", {}).get("nrtrec.local-runner") for svc in _compose()["services"].values()
    }
    assert rows - labelled == set(), f"no compose service for {sorted(rows - labelled)}"
    assert {"kafka-0", "kafka-1", "kafka-2", "flink-taskmanager-0", "flink-taskmanager-1"} <= rows


def test_compose_kafka_cluster_matches_the_local_runners():
    from nrtrec.core.kafka import contract_topics

    cluster = _cluster_mode().kafka
    services = _compose()["services"]
    brokers = [services[f"kafka-{i}"]["environment"] for i in range(cluster.brokers)]
    assert f"kafka-{cluster.brokers}" not in services
    voters = {f"{i + 1}@kafka-{i}:9093" for i in range(cluster.brokers)}
    for i, env in enumerate(brokers):
        assert env["KAFKA_NODE_ID"] == i + 1
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert f"PLAINTEXT://kafka-{i}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == cluster.replication_factor
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == cluster.replication_factor
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == cluster.min_insync_replicas
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == cluster.min_insync_replicas
    assert len({env["CLUSTER_ID"] for env in brokers}) == 1
    # Every topic as contract_topics creates it for the local cluster.
    script = " ".join(services["kafka-topics"]["command"])
    assert f"--replication-factor {cluster.replication_factor}" in script
    assert f"--config min.insync.replicas={cluster.min_insync_replicas}" in script
    topics = contract_topics(
        Settings().topics,
        cluster.partitions,
        cluster.replication_factor,
        cluster.min_insync_replicas,
    )
    for topic in topics:
        line = next((part for part in script.split("&&") if f"create {topic.topic} " in part), None)
        assert line is not None, f"kafka-topics does not create {topic.topic}"
        assert f"--partitions {topic.num_partitions}" in line, line
        for key in ("cleanup.policy", "retention.ms"):
            if key in topic.config:
                assert f"--config {key}={topic.config[key]}" in line, line
    bootstrap = ",".join(f"kafka-{i}:9092" for i in range(cluster.brokers))
    for name, svc in services.items():
        command = svc.get("command")
        if isinstance(command, str) and "--kafka" in command:
            assert f"--kafka {bootstrap}" in command, f"{name} bootstraps from fewer brokers"


def test_compose_flink_cluster_runs_both_jobs_at_the_cluster_modes_parallelism():
    from nrtrec.streaming.submit import JOBS

    cluster = _cluster_mode()
    services = _compose()["services"]
    managers = {n: s for n, s in services.items() if n.startswith("flink-taskmanager")}
    assert sorted(managers) == [f"flink-taskmanager-{i}" for i in range(cluster.flink.taskmanagers)]
    slots = sum(_flink_properties(s)["taskmanager.numberOfTaskSlots"] for s in managers.values())
    assert slots >= cluster.streaming.parallelism * len(JOBS)
    for name, svc in managers.items():
        assert f"taskmanager.resource-id={name}" in svc["command"]
    jobmanager = _flink_properties(services["flink-jobmanager"])
    assert jobmanager["parallelism.default"] == cluster.streaming.parallelism


def test_compose_query_nodes_own_the_shard_map_of_the_local_runner():
    cluster = _cluster_mode()
    services = _compose()["services"]
    shards, replicas = cluster.local.query_node_shards, cluster.local.query_node_replicas
    owned = cluster.shard_map().partitions
    for n in range(shards * replicas):
        svc = services[f"query-node-{n}"]
        shard, replica = divmod(n, replicas)
        partitions = svc["command"].split("--partitions ")[1].split()[0]
        assert tuple(int(p) for p in partitions.split(",")) == tuple(owned[shard]), svc["command"]
        assert svc["environment"]["NRTREC_QUERY_NODE__REPLICA"] == str(replica)
    gateway = services["gateway"]["command"]
    groups = [g.split()[0] for g in gateway.split("--shard ")[1:]]
    assert groups == [
        ",".join(f"http://query-node-{s * replicas + r}:8100" for r in range(replicas))
        for s in range(shards)
    ]
    assert f"--num-partitions {cluster.kafka.partitions}" in gateway

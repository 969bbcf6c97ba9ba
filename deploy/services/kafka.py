"""Apache Kafka in KRaft mode: ``kafka.brokers`` combined broker+controller nodes started with
`java` (one, ``kafka``, by default; a cluster of ``kafka-0`` .. ``kafka-N`` when asked for).

In a cluster every node is a voter of a static controller quorum, and our topics (and Kafka's
own: consumer offsets, transaction state) have ``kafka.replication_factor`` copies and
``min.insync.replicas`` one fewer: with three brokers, one may die and every ``acks=all`` write
still lands on two disks, with no client waiting for it to come back.

The jars come from Maven Central (``kafka_<scala>`` and its runtime dependencies), so no
tarball or Docker image is needed. The broker's POM ships log4j-core but no SLF4J binding;
without one the broker would log nothing, so ``log4j-slf4j-impl`` is added (the SLF4J 1.x
binding, matching the ``slf4j-api`` 1.7.x that Kafka depends on, as Kafka's own tarball does).
"""

from __future__ import annotations

import base64
import logging
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from nrtrec.core.kafka import contract_topics
from nrtrec.deploy.errors import InstallFailed, ServiceFailed
from nrtrec.deploy.maven import resolve
from nrtrec.deploy.services.base import Process, Service, port_open

log = logging.getLogger(__name__)

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# The controller and the request channel are chatty at INFO.
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def random_cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: 16 random bytes, URL-safe base64."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka refuses ids that start with '-' (they read as command-line options).
        if not cid.startswith("-"):
            return cid


class KafkaService(Service):
    name = "kafka"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / f"jars-{self.settings.kafka.version}"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.properties"

    def node_names(self) -> list[str]:
        """The supervised processes: ``kafka`` alone, or ``kafka-0`` .. in a cluster."""
        n = self.settings.kafka.brokers
        return [self.name] if n == 1 else [f"{self.name}-{i}" for i in range(n)]

    def _node_dir(self, node: int) -> Path:
        # A single broker keeps the layout of every earlier run (its log dir is kept).
        return self.data_dir if self.settings.kafka.brokers == 1 else self.data_dir / f"node-{node}"

    def config_file(self, node: int = 0) -> Path:
        return self._node_dir(node) / "server.properties"

    def log_dir(self, node: int = 0) -> Path:
        return self._node_dir(node) / "log"

    def install(self) -> None:
        cfg = self.settings.kafka
        jars = resolve(
            [
                f"org.apache.kafka:kafka_{cfg.scala_version}:{cfg.version}",
                f"org.apache.logging.log4j:log4j-core:{cfg.log4j_version}",
                f"org.apache.logging.log4j:log4j-slf4j-impl:{cfg.log4j_version}",
            ],
            self.jars_dir,
        )
        if not any(j.name.startswith(f"kafka_{cfg.scala_version}-") for j in jars):
            raise InstallFailed(f"kafka: no broker jar in {self.jars_dir}")

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.settings.kafka.heap}",
            f"-Xms{self.settings.kafka.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            str(self.jars_dir / "*"),
            main,
            *args,
        ]

    def _properties(self, node: int) -> dict[str, str]:
        cfg = self.settings.kafka
        port, controller = cfg.broker_ports[node], cfg.controller_ports[node]
        # One node keeps id 1, as every earlier single-broker run formatted it.
        ids = [1] if cfg.brokers == 1 else list(range(cfg.brokers))
        quorum = zip(ids, cfg.controller_ports, strict=True)
        voters = ",".join(f"{i}@{cfg.host}:{p}" for i, p in quorum)
        replicas, min_isr = str(cfg.replication_factor), str(cfg.min_insync_replicas)
        return {
            "process.roles": "broker,controller",
            "node.id": str(ids[node]),
            # A static quorum of every node: the simplest KRaft set-up that survives restarts.
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{cfg.host}:{port},CONTROLLER://{cfg.host}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{cfg.host}:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir(node)),
            "num.partitions": str(cfg.partitions),
            # Contract topics are created explicitly; a typo must fail, not make a new topic.
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # One consumer per group in tests: waiting for more members only adds lag.
            "group.initial.rebalance.delay.ms": "0",
        }

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log4j_file.write_text(_LOG4J2)
        cluster_id = self._cluster_id() or random_cluster_id()
        for node in range(self.settings.kafka.brokers):
            self._node_dir(node).mkdir(parents=True, exist_ok=True)
            props = self._properties(node)
            self.config_file(node).write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            # Formatting again would need the old cluster id; an existing log dir keeps its data.
            if not (self.log_dir(node) / "meta.properties").exists():
                self._format(node, cluster_id)

    def _cluster_id(self) -> str | None:
        """The id a node of this run was formatted with: a node whose log dir was lost joins
        the same cluster."""
        for node in range(self.settings.kafka.brokers):
            meta = self.log_dir(node) / "meta.properties"
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return None

    def _format(self, node: int, cluster_id: str) -> None:
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--config", str(self.config_file(node)),
            "--cluster-id", cluster_id,
        )  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceFailed(
                self.name, "formatting the KRaft storage failed", result.stdout + result.stderr
            )

    def processes(self) -> list[Process]:
        return [
            Process(name, self._java("kafka.Kafka", str(self.config_file(node))))
            for node, name in enumerate(self.node_names())
        ]

    def ports(self) -> list[int]:
        return [*self.settings.kafka.broker_ports, *self.settings.kafka.controller_ports]

    def url(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def members(self) -> dict[str, list[str]]:
        return {name: [name] for name in self.node_names()}

    def member_healthy(self, member: str) -> bool:
        """This node accepts connections and the cluster's metadata lists it."""
        cfg, node = self.settings.kafka, self.node_names().index(member)
        if not port_open(cfg.host, cfg.broker_ports[node]):
            return False
        try:
            brokers = self._admin().list_topics(timeout=2).brokers.values()
        except Exception:
            return False
        return any(b.port == cfg.broker_ports[node] for b in brokers)

    def member_url(self, member: str) -> str:
        cfg = self.settings.kafka
        return f"{cfg.host}:{cfg.broker_ports[self.node_names().index(member)]}"

    def _admin(self) -> AdminClient:
        # log_level 3 (errors only): librdkafka otherwise warns about every refused connection.
        return AdminClient({"bootstrap.servers": self.url(), "log_level": 3})

    def healthy(self) -> bool:
        """Every broker accepts connections and is registered with the controller quorum."""
        cfg = self.settings.kafka
        # Probing the ports first keeps librdkafka from retrying against a broker not yet there.
        if not all(port_open(cfg.host, port) for port in cfg.broker_ports):
            return False
        try:
            return len(self._admin().list_topics(timeout=2).brokers) == cfg.brokers
        except Exception:
            return False

    def after_start(self) -> None:
        """The contract's topics, created with their retention, or given it when they exist
        from before (an older run's topics kept the broker's defaults)."""
        admin = self._admin()
        cfg = self.settings.kafka
        wanted = contract_topics(
            self.settings.topics, cfg.partitions, cfg.replication_factor, cfg.min_insync_replicas
        )
        for topic, future in admin.create_topics(wanted).items():
            try:
                future.result()
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceFailed(self.name, f"creating topic {topic} failed: {e}") from e
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                t.topic,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in t.config.items()
                ],
            )
            for t in wanted
        ]
        for resource, future in admin.incremental_alter_configs(resources).items():
            try:
                future.result()
            except KafkaException as e:
                raise ServiceFailed(self.name, f"configuring {resource} failed: {e}") from e
        self._wait_for_topics(admin)

    def _wait_for_topics(self, admin: AdminClient, timeout_s: float = 30.0) -> None:
        """The controller acknowledges a new topic before the broker serves it; callers of `up`
        must be able to produce right away."""
        wanted = set(self.settings.topics.all().values())
        deadline = time.monotonic() + timeout_s
        while True:
            topics = admin.list_topics(timeout=5).topics
            ready = {n for n in wanted if n in topics and topics[n].error is None}
            if ready == wanted:
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(self.name, f"topics not served: {sorted(wanted - ready)}")
            time.sleep(0.2)

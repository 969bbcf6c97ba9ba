"""Apache Kafka in KRaft mode: one combined broker+controller node started with `java`.

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
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

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

    def prepare(self) -> None:
        cfg = self.settings.kafka
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log4j_file.write_text(_LOG4J2)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static one-voter quorum: the simplest KRaft set-up that survives restarts.
            "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
            "listeners": (
                f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(cfg.partitions),
            # Contract topics are created explicitly; a typo must fail, not make a new topic.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # One node, one consumer per group in tests: waiting for more members only adds lag.
            "group.initial.rebalance.delay.ms": "0",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        # Formatting again would need the old cluster id; an existing log dir keeps its data.
        if not (self.log_dir / "meta.properties").exists():
            self._format()

    def _format(self) -> None:
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--config", str(self.config_file),
            "--cluster-id", random_cluster_id(),
        )  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceFailed(
                self.name, "formatting the KRaft storage failed", result.stdout + result.stderr
            )

    def processes(self) -> list[Process]:
        return [Process(self.name, self._java("kafka.Kafka", str(self.config_file)))]

    def ports(self) -> list[int]:
        return [self.settings.kafka.port, self.settings.kafka.controller_port]

    def url(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def _admin(self) -> AdminClient:
        # log_level 3 (errors only): librdkafka otherwise warns about every refused connection.
        return AdminClient({"bootstrap.servers": self.url(), "log_level": 3})

    def healthy(self) -> bool:
        cfg = self.settings.kafka
        # Probing the port first keeps librdkafka from retrying against a broker not yet there.
        if not port_open(cfg.host, cfg.port):
            return False
        try:
            return bool(self._admin().list_topics(timeout=2).brokers)
        except Exception:
            return False

    def after_start(self) -> None:
        """The contract's topics, created with their retention, or given it when they exist
        from before (an older run's topics kept the broker's defaults)."""
        admin = self._admin()
        wanted = contract_topics(self.settings.topics, self.settings.kafka.partitions)
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

"""Real services for tests: testcontainers when Docker answers, the local runner otherwise."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from nrtrec.core.settings import Settings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services import SERVICE_TYPES
from nrtrec.deploy.services.flink import FlinkService


@dataclass(frozen=True)
class TritonEndpoint:
    grpc_url: str
    http_url: str


@dataclass(frozen=True)
class CouchbaseEndpoint:
    connstr: str
    bucket: str
    username: str
    password: str


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.docker = docker_available()
        self._started: dict[str, Any] = {}
        self._cleanup = ExitStack()

    def close(self) -> None:
        self._cleanup.close()

    # --- one accessor per service ------------------------------------------------------------

    def kafka(self) -> str:
        """Bootstrap servers."""
        if self.docker:
            return self._container("kafka", _kafka_container).get_bootstrap_server()
        self._local("kafka")
        return self.settings.kafka.bootstrap_servers

    def redis(self) -> str:
        if self.docker:
            c = self._container("redis", _redis_container)
            return f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        self._local("redis")
        return self.settings.redis.url

    def triton(self) -> TritonEndpoint:
        if self.docker:
            c = self._container("triton", lambda: _triton_container(self.settings))
            host = c.get_container_host_ip()
            return TritonEndpoint(
                f"{host}:{c.get_exposed_port(8001)}", f"http://{host}:{c.get_exposed_port(8000)}"
            )
        self._local("triton")
        return TritonEndpoint(self.settings.triton.grpc_url, self.settings.triton.http_url)

    def couchbase(self) -> CouchbaseEndpoint:
        cfg = self.settings.couchbase
        if self.docker:
            c = self._container("couchbase", _couchbase_container)
            connstr = f"couchbase://{c.get_container_host_ip()}"
            return CouchbaseEndpoint(connstr, cfg.bucket, cfg.username, cfg.password)
        service = self._local("couchbase")
        return CouchbaseEndpoint(
            service.connection_string(), cfg.bucket, cfg.username, cfg.password
        )

    def flink(self) -> FlinkService:
        """The local standalone cluster, either way: the PyFlink client and the cluster must
        share a Flink version, which pip pins. The service object gives its REST url, the
        connector jars and the client configuration jobs are submitted with."""
        return self._local("flink")

    # --- plumbing ----------------------------------------------------------------------------

    def local_settings(self, name: str) -> Settings:
        """The settings that service ``name``'s local runner uses: a run dir of its own."""
        return self.settings.model_copy(update={"run_dir": self.settings.run_dir / name})

    def _local(self, name: str):
        if name not in self._started:
            settings = self.local_settings(name)
            service = SERVICE_TYPES[name](settings)
            runner = LocalRunner(settings, [service])
            self._cleanup.callback(runner.down)
            runner.up()
            self._started[name] = service
        return self._started[name]

    def _container(self, name: str, make):
        if name not in self._started:
            container = make()
            self._cleanup.enter_context(container)
            self._started[name] = container
        return self._started[name]


def _kafka_container():
    from testcontainers.kafka import KafkaContainer

    return KafkaContainer("apache/kafka:4.3.1").with_kraft()


def _redis_container():
    from testcontainers.redis import RedisContainer

    return RedisContainer("redis:7")


def _triton_container(settings: Settings):
    from testcontainers.core.container import DockerContainer

    repo = str(settings.triton.model_repository)
    return (
        DockerContainer("nvcr.io/nvidia/tritonserver:24.10-py3")
        .with_volume_mapping(repo, "/models", "rw")
        .with_exposed_ports(8000, 8001)
        .with_command("tritonserver --model-repository=/models --model-control-mode=explicit")
    )


def _couchbase_container():
    from testcontainers.core.container import DockerContainer

    return DockerContainer("couchbase/server-sandbox:7.6.2").with_exposed_ports(8091, 11210)

"""The one typed settings object of nrtrec.

Every knob comes from here, read from environment variables prefixed ``NRTREC_``; nested
groups use ``__`` (``NRTREC_KAFKA__PORT=19092``). Services receive a ``Settings`` instance
(dependency injection) instead of reading globals, so tests run a second stack on other ports
next to a developer's own.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK = "127.0.0.1"


class KafkaSettings(BaseModel):
    host: str = LOOPBACK
    port: int = 9092
    controller_port: int = 9093
    # Broker jars come from Maven Central; 4.x is KRaft-only, which is what we want.
    version: str = "4.3.1"
    scala_version: str = "2.13"
    heap: str = "1g"
    partitions: int = 4

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


class FlinkSettings(BaseModel):
    host: str = LOOPBACK
    rest_port: int = 8081
    rpc_port: int = 6123
    # The official Kafka connector is released per Flink minor; it must match apache-flink.
    kafka_connector_version: str = "5.0.0-2.2"
    taskmanager_slots: int = 2
    process_memory: str = "1600m"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"


class TritonSettings(BaseModel):
    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # None means the repository that ships with nrtrec (inference/model_repository).
    model_repository: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class RedisSettings(BaseModel):
    host: str = LOOPBACK
    port: int = 6379

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class CouchbaseSettings(BaseModel):
    # Where a real cluster is configured the local runner does not start gocaves.
    connstr: str | None = None
    host: str = LOOPBACK
    # gocaves picks its own ports; this is the port of its control (mock) API.
    control_port: int = 11450
    bucket: str = "default"
    username: str = "Administrator"
    password: str = "password"
    # The version the Python SDK's own test suite pins.
    gocaves_version: str = "v0.0.1-78"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NRTREC_", env_nested_delimiter="__", extra="ignore"
    )

    run_dir: Path = Field(default=Path(".run"), description="pid files, logs, data of `nrtrec up`")
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "nrtrec",
        description="downloaded jars and built binaries, shared by every run",
    )
    token: str | None = Field(default=None, description="bearer token for write/admin endpoints")
    startup_timeout_s: float = 180.0

    kafka: KafkaSettings = KafkaSettings()
    flink: FlinkSettings = FlinkSettings()
    triton: TritonSettings = TritonSettings()
    redis: RedisSettings = RedisSettings()
    couchbase: CouchbaseSettings = CouchbaseSettings()

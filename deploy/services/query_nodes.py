"""The query nodes (one per shard, following item-deltas) and the gateway in front of them.

Each is ``nrtrec`` itself, started with the runner's settings adjusted for that process (its
port, its shard's partitions), which reach it as a settings file (``Process.settings``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from nrtrec.core.settings import Settings
from nrtrec.deploy.services.base import Process, Service


def nrtrec_command(*args: str) -> list[str]:
    # The console script of this environment, whatever PATH says.
    return [str(Path(sys.executable).with_name("nrtrec")), *args]


def healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class QueryNodeService(Service):
    """``nrtrec query-node`` for one replica of one shard: it reads that shard's item-deltas
    partitions in a consumer group of its own. Node ``n`` is replica ``n % replicas`` of shard
    ``n // replicas`` and listens on ``query_node.port + n``."""

    name = "query-node"

    def __init__(self, settings: Settings, node: int):
        super().__init__(settings)
        self.node = node
        self.shard, self.replica = divmod(node, settings.local.query_node_replicas)
        self.name = f"query-node-{node}"

    def install(self) -> None:
        """Nothing to fetch: the node is nrtrec itself."""

    def node_settings(self) -> Settings:
        """The runner's settings as this node runs on them."""
        s = self.settings
        node = s.query_node.model_copy(
            update={
                "port": s.query_node.port + self.node,
                "data_dir": self.data_dir,
                "consume_deltas": True,
                "kafka_bootstrap": s.kafka.bootstrap_servers,
                "partitions": list(s.shard_map().partitions_of(self.shard)),
                "replica": self.replica,
            }
        )
        return s.model_copy(update={"query_node": node})

    def processes(self) -> list[Process]:
        return [Process(self.name, nrtrec_command("query-node"), settings=self.node_settings())]

    def ports(self) -> list[int]:
        return [self.settings.query_node.port + self.node]

    def url(self) -> str:
        return self.settings.local_shard_urls()[self.shard][self.replica]

    def healthy(self) -> bool:
        return healthz(self.url())


class GatewayService(Service):
    """``nrtrec gateway`` over every local query node."""

    name = "gateway"

    def install(self) -> None:
        """Nothing to fetch: the gateway is nrtrec itself."""

    def processes(self) -> list[Process]:
        settings = self.settings.with_local_shards()
        return [Process(self.name, nrtrec_command("gateway"), settings=settings)]

    def ports(self) -> list[int]:
        return [self.settings.gateway.port]

    def url(self) -> str:
        return f"http://{self.settings.gateway.host}:{self.settings.gateway.port}"

    def healthy(self) -> bool:
        return healthz(self.url())

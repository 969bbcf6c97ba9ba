"""The query nodes (one per shard, following item-deltas) and the gateway in front of them."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from nrtrec.deploy.services.base import Process, Service
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.settings import Settings, settings_env


def _nrtrec() -> str:
    # The console script of this environment, whatever PATH says.
    return str(Path(sys.executable).with_name("nrtrec"))


def _healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def shard_map(settings: Settings) -> ShardMap:
    return ShardMap.of(
        settings.local.query_node_shards,
        settings.kafka.partitions,
        settings.gateway.shard_partitions,
    )


def shard_url(settings: Settings, shard: int) -> str:
    return f"http://{settings.query_node.host}:{settings.query_node.port + shard}"


class QueryNodeService(Service):
    """``nrtrec query-node`` for one shard: owns that shard's item-deltas partitions."""

    name = "query-node"

    def __init__(self, settings: Settings, shard: int):
        super().__init__(settings)
        self.shard = shard
        self.name = f"query-node-{shard}"

    def install(self) -> None:
        """Nothing to fetch: the node is nrtrec itself."""

    def processes(self) -> list[Process]:
        partitions = ",".join(map(str, shard_map(self.settings).partitions_of(self.shard)))
        argv = [
            _nrtrec(), "query-node",
            "--host", self.settings.query_node.host,
            "--port", str(self.settings.query_node.port + self.shard),
            "--data-dir", str(self.data_dir),
            "--kafka", self.settings.kafka.bootstrap_servers,
            "--partitions", partitions,
        ]  # fmt: skip
        # The token travels in the environment, not in argv where `ps` shows it; so do the
        # rest of the settings, so the node runs on exactly this runner's.
        env = settings_env(self.settings)
        if self.settings.token:
            env["NRTREC_QUERY_NODE_TOKEN"] = self.settings.token
        return [Process(self.name, argv, env=env)]

    def ports(self) -> list[int]:
        return [self.settings.query_node.port + self.shard]

    def url(self) -> str:
        return shard_url(self.settings, self.shard)

    def healthy(self) -> bool:
        return _healthz(self.url())


class GatewayService(Service):
    """``nrtrec gateway`` over every local query node."""

    name = "gateway"

    def install(self) -> None:
        """Nothing to fetch: the gateway is nrtrec itself."""

    def processes(self) -> list[Process]:
        gw = self.settings.gateway
        argv = [_nrtrec(), "gateway", "--host", gw.host, "--port", str(gw.port)]
        argv += ["--num-partitions", str(self.settings.kafka.partitions)]
        for shard in range(self.settings.local.query_node_shards):
            argv += ["--shard", shard_url(self.settings, shard)]
        env = settings_env(self.settings)
        if self.settings.token:
            env["NRTREC_GATEWAY_TOKEN"] = self.settings.token
        return [Process(self.name, argv, env=env)]

    def ports(self) -> list[int]:
        return [self.settings.gateway.port]

    def url(self) -> str:
        return f"http://{self.settings.gateway.host}:{self.settings.gateway.port}"

    def healthy(self) -> bool:
        return _healthz(self.url())

"""The serving path's processes: Redis, a Kafka broker (the apps' impressions), query nodes, a
gateway, and three apps: two that differ only in how they read (the shards themselves, or the
gateway), and one that reads the shards without the fresh boost."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    ServerProcess,
    free_port,
    local_kafka,
    nrtrec_command,
    query_node_process,
)
from bench.recommender_app.params import APP_PATHS, KEY_PREFIX, TOKEN, Params
from nrtrec.core.settings import RedisSettings, Settings, UserStoreSettings

PARTITIONS = 4


@dataclass
class Stack:
    redis: ServerProcess
    nodes: list[ServerProcess]
    gateway: ServerProcess
    # app.query_path "shards" (what `nrtrec up` runs) and "gateway"; "shards_no_fresh" reads
    # the shards with app.fresh_boost 0 (no fresh pool).
    apps: dict[str, ServerProcess]
    settings: Settings

    def servers(self) -> list[ServerProcess]:
        return [*self.apps.values(), self.gateway, *self.nodes, self.redis]


def start_stack(p: Params, workdir: Path, exits: contextlib.ExitStack) -> Stack:
    nrtrec = nrtrec_command()
    redis_port = free_port()
    redis = ServerProcess(
        "redis",
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""],
        workdir,
        redis_port,
    )
    exits.callback(redis.close)
    settings = Settings(
        redis=RedisSettings(port=redis_port),
        user_store=UserStoreSettings(key_prefix=KEY_PREFIX, timeout_s=1.0),
    )
    import redis as redis_client

    redis.wait(lambda: bool(redis_client.Redis(port=redis_port).ping()))
    quiet = {"NRTREC_LOG_FORMAT": "text", "NRTREC_RUN_DIR": str(workdir / "run")}
    nodes = []
    for shard in range(p.shards):
        node = query_node_process(
            f"query-node-{shard}", workdir, workdir / f"node{shard}", TOKEN, quiet
        )
        exits.callback(node.close)
        nodes.append(node)
    for node in nodes:
        node.wait_healthy()
    shard_args = ["--num-partitions", str(PARTITIONS)]
    for node in nodes:
        shard_args += ["--shard", node.url]
    port = free_port()
    argv = [*nrtrec, "gateway", "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN]
    gateway = ServerProcess("gateway", [*argv, *shard_args], workdir, port, quiet)
    exits.callback(gateway.close)
    gateway.wait_healthy()
    # The apps' impressions go to it; until 10dc748 their --kafka named a port where nothing
    # listened, so every impression went to the app's spool (on disk, and kept in memory until
    # sent): the apps' heap grew with each request and their full collections took 15-55 ms of
    # CPU, an app with Kafka down rather than the serving path.
    kafka = local_kafka(workdir / "kafka", exits).kafka.bootstrap_servers
    env = {
        **quiet,
        "NRTREC_REDIS__PORT": str(redis_port),
        "NRTREC_USER_STORE__KEY_PREFIX": KEY_PREFIX,
    }
    apps = {}
    for path in APP_PATHS:
        port = free_port()
        argv = [*nrtrec, "app", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--gateway-url", gateway.url, "--kafka", kafka]
        if path.startswith("shards"):
            argv += shard_args
        app_env = {**env, "NRTREC_APP__FRESH_BOOST": "0"} if path == "shards_no_fresh" else env
        app = ServerProcess(f"app-{path}", argv, workdir, port, app_env)
        exits.callback(app.close)
        apps[path] = app
    for app in apps.values():
        app.wait_healthy()
    return Stack(redis, nodes, gateway, apps, settings)

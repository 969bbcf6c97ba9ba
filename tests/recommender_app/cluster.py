"""Real services for the recommender app's tests: query nodes and a gateway as processes
(``nrtrec query-node``, ``nrtrec gateway``), a catalogue written through the gateway, user
vectors in a real store, and the app itself in-process or as ``nrtrec app``, reading through
the gateway or from the shards themselves (its own fan-out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from nrtrec.core.settings import (
    AppSettings,
    GatewaySettings,
    KafkaSettings,
    RedisSettings,
    Settings,
    UserStoreSettings,
)
from nrtrec.schemas import UserVector
from nrtrec.user_store import UserVectorStore
from tests.conftest import free_port
from tests.waiting import wait_healthy

TOKEN = "cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARTITIONS = 4
DIM = 8
CATEGORIES = ("Comedy", "Drama", "Horror", "Action")
LOCATIONS = ("US", "CA", "DE")


def nrtrec() -> str:
    return str(Path(sys.executable).with_name("nrtrec"))


@dataclass
class Server:
    """One ``nrtrec`` server process on a free loopback port."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def wait_healthy(self) -> None:
        wait_healthy(f"{self.url}/healthz", self.process, log=self.log)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start(name: str, directory: Path, args: Sequence[str], env: dict[str, str]) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / f"{name}.log"
    command = [nrtrec(), *args, "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "NRTREC_RUN_DIR": str(directory / "run"), **env}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    return Server(name, f"http://127.0.0.1:{port}", process, log)


@dataclass
class Catalogue:
    """``items`` at versions 1 and 2 (different vectors), with titles and attributes."""

    ids: list[str]
    vectors: dict[int, np.ndarray]
    attributes: dict[str, dict]
    # Ids only in version 1 (an item the newer encoder has not embedded yet).
    only_v1: list[str] = field(default_factory=list)

    def exact(self, version: int, query: Sequence[float], k: int, keep=lambda i: True):
        """Ids of the k most similar items (cosine) at ``version`` among those ``keep`` keeps."""
        ids = [i for i in self.version_ids(version) if keep(i)]
        rows = [self.ids.index(i) for i in ids]
        matrix = self.vectors[version][rows]
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        q = np.asarray(query, np.float32)
        order = np.argsort(-(matrix @ (q / np.linalg.norm(q))), kind="stable")
        return [ids[r] for r in order[:k]]

    def version_ids(self, version: int) -> list[str]:
        if version == 1:
            return list(self.ids)
        return [i for i in self.ids if i not in self.only_v1]


def make_catalogue(n: int = 300, seed: int = 7) -> Catalogue:
    rng = np.random.default_rng(seed)
    ids = [str(i) for i in range(1, n + 1)]
    attributes = {
        item_id: {
            "title": f"Film {item_id}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "price": float(5 + (i * 7) % 40),
            "year": 1980 + i % 30,
            "location": LOCATIONS[i % len(LOCATIONS)],
            "genres": [CATEGORIES[i % len(CATEGORIES)]],
        }
        for i, item_id in enumerate(ids)
    }
    vectors = {v: rng.standard_normal((n, DIM)).astype(np.float32) for v in (1, 2)}
    return Catalogue(ids, vectors, attributes, only_v1=ids[-5:])


@dataclass
class Cluster:
    nodes: list[Server]
    gateway: Server

    def shard_urls(self) -> list[list[str]]:
        """Per shard its replicas' URLs (one replica each here), as the gateway has them."""
        return [[node.url] for node in self.nodes]

    def close(self) -> None:
        for server in [self.gateway, *self.nodes]:
            server.stop()


def start_cluster(directory: Path, shards: int = 2) -> Cluster:
    nodes = [
        start(f"node{s}", directory / f"node{s}", ["query-node", "--token", TOKEN], {})
        for s in range(shards)
    ]
    for node in nodes:
        node.wait_healthy()
    args = ["gateway", "--num-partitions", str(PARTITIONS), "--token", TOKEN]
    for node in nodes:
        args += ["--shard", node.url]
    # Quick health probes and a short shard deadline: the shard-down tests stay short.
    env = {"NRTREC_GATEWAY__HEALTH_INTERVAL_S": "0.2", "NRTREC_GATEWAY__REQUEST_TIMEOUT_S": "0.5"}
    gateway = start("gateway", directory / "gateway", args, env)
    gateway.wait_healthy()
    return Cluster(nodes, gateway)


def load_catalogue(gateway_url: str, catalogue: Catalogue) -> None:
    with httpx.Client(base_url=gateway_url, headers=AUTH, trust_env=False, timeout=30) as c:
        for version in (1, 2):
            spec = {"dim": DIM, "metric": "cosine", "model_version": version}
            c.put("/v1/indexes/items", json=spec).raise_for_status()
            ids = catalogue.version_ids(version)
            items = [
                {
                    "id": i,
                    "vector": catalogue.vectors[version][catalogue.ids.index(i)].tolist(),
                    "attributes": catalogue.attributes[i],
                }
                for i in ids
            ]
            body = {"items": items, "model_version": version}
            c.post("/v1/indexes/items/upsert", json=body).raise_for_status()


def upsert_items(gateway_url: str, version: int, items: list[dict]) -> None:
    """``items`` ({id, vector, attributes}) into the cluster's index at ``version``."""
    with httpx.Client(base_url=gateway_url, headers=AUTH, trust_env=False, timeout=30) as c:
        body = {"items": items, "model_version": version}
        c.post("/v1/indexes/items/upsert", json=body).raise_for_status()


def delete_items(gateway_url: str, version: int, ids: list[str]) -> None:
    with httpx.Client(base_url=gateway_url, headers=AUTH, trust_env=False, timeout=30) as c:
        body = {"ids": ids, "model_version": version}
        c.post("/v1/indexes/items/delete", json=body).raise_for_status()


def store_settings(
    redis_url: str,
    gateway_url: str | None = None,
    shards: list[list[str]] | None = None,
    **app: object,
) -> Settings:
    """Settings whose store is the Redis at ``redis_url``, with a key prefix of its own, so
    every test starts without users or popular items; the query API at ``gateway_url``, or,
    with ``shards``, the shards themselves (``app.query_path`` auto: the app's own fan-out)."""
    parsed = urlparse(redis_url)
    run_dir = Path(tempfile.mkdtemp(prefix="apptest-"))
    gateway = GatewaySettings(client_url=gateway_url)
    if shards:
        # As the cluster's gateway: its partitions, quick health probes.
        gateway = gateway.model_copy(
            update={"shards": shards, "num_partitions": PARTITIONS, "health_interval_s": 0.2}
        )
    return Settings(
        run_dir=run_dir,
        gateway=gateway,
        redis=RedisSettings(host=parsed.hostname or "127.0.0.1", port=parsed.port or 6379),
        # No broker there (tests of click tracking give theirs): never a developer's own Kafka.
        kafka=KafkaSettings(port=free_port()),
        user_store=UserStoreSettings(key_prefix=f"apptest-{os.getpid()}-{time.time_ns()}:"),
        app=AppSettings(spool_path=run_dir / "clicks.jsonl", **app),
    )


def with_kafka(settings: Settings, bootstrap: str) -> Settings:
    host, _, port = bootstrap.rpartition(":")
    return settings.model_copy(update={"kafka": KafkaSettings(host=host, port=int(port))})


def put_user(
    store: UserVectorStore,
    user_id: str,
    vectors: dict[int, Sequence[float]],
    recent: Sequence[str] = (),
    clicked_s_ago: float = 0.0,
) -> None:
    """A user record with one vector per version (newest last written), as the job would;
    its newest click ``clicked_s_ago`` seconds ago."""
    now = time.time_ns() // 1_000_000
    for version, vector in sorted(vectors.items()):
        store.put(
            UserVector(
                user_id=user_id,
                model_version=version,
                vector=list(map(float, vector)),
                source_ts=now - int(clicked_s_ago * 1000),
                updated_ts=now,
            ),
            recent_items=list(recent),
        )

"""The streaming pipeline for a test module, on the session's real services: Kafka, Flink, Triton
and Redis from the session stack; topics, a store key prefix and a consumer group of the
module's own; two query-node shards and a gateway following those topics; the trained encoders
loaded; both PyFlink jobs submitted. With ``app``, the recommender app too, started the way
``nrtrec up`` starts it (``AppService``: its own fan-out over the local shards). With
``own_triton``, a Triton of the module's own (``settings.triton``: its ports and repository)
instead of the session's, for a test that loads and unloads versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from nrtrec.cli.up import ensure_indexes, ensure_jobs, ensure_models
from nrtrec.core.settings import Settings, TopicSettings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.app import AppService
from nrtrec.deploy.services.base import Service
from nrtrec.deploy.services.flink import FlinkService
from nrtrec.deploy.services.query_nodes import GatewayService, QueryNodeService
from nrtrec.deploy.services.triton import TritonService
from nrtrec.streaming.submit import ITEM_DELTAS, USER_VECTORS, running_jobs
from tests.conftest import free_port, free_port_pair
from tests.stack import Stack

TOPICS = ("clicks", "listings", "item-deltas", "dead", "declarations")


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    flink: FlinkService
    jobs: dict[str, str]  # job name -> job id
    topics: dict[str, str]  # short name (TOPICS) -> this module's topic

    @property
    def app_url(self) -> str:
        return f"http://{self.settings.app.host}:{self.settings.app.port}"


@contextmanager
def running_pipeline(
    stack: Stack,
    test_settings: Settings,
    run_dir: Path,
    app: bool = False,
    *,
    own_triton: bool = False,
    versions: tuple[int, ...] = (1, 2),
) -> Iterator[Pipeline]:
    bootstrap = stack.kafka()
    stack.redis()
    if not own_triton:
        stack.triton()
    flink = stack.flink()
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{tag}" for name in TOPICS}
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the futures resolve
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=test_settings.kafka.partitions) for t in topics.values()]
    )
    for f in futures.values():
        f.result(30)
    s = test_settings
    settings = s.model_copy(
        update={
            "run_dir": run_dir,
            "query_node": s.query_node.model_copy(update={"port": free_port_pair()}),
            "topics": TopicSettings(
                clicks=topics["clicks"],
                listings=topics["listings"],
                item_deltas=topics["item-deltas"],
                dead_letters=topics["dead"],
                index_declarations=topics["declarations"],
            ),
            "gateway": s.gateway.model_copy(update={"port": free_port()}),
            "app": s.app.model_copy(
                update={"port": free_port(), "spool_path": run_dir / "clicks.jsonl"}
            ),
            "local": s.local.model_copy(update={"query_node_shards": 2, "query_node_replicas": 1}),
            "user_store": s.user_store.model_copy(update={"key_prefix": f"e2e-{tag}:"}),
            "streaming": s.streaming.model_copy(
                update={"consumer_group": f"e2e-{tag}", "checkpoint_interval_ms": 1000}
            ),
        }
    )
    services: list[Service] = [TritonService(settings)] if own_triton else []
    services += [QueryNodeService(settings, 0), QueryNodeService(settings, 1)]
    services.append(GatewayService(settings))
    if app:
        services.append(AppService(settings))
    runner = LocalRunner(settings, services)
    runner.up()
    try:
        served = ensure_models(settings)
        assert served == list(versions)
        ensure_indexes(settings, served)
        jobs = ensure_jobs(settings, flink)
        yield Pipeline(settings, flink, jobs, topics)
    finally:
        for name, job_id in running_jobs(flink).items():
            if name in (ITEM_DELTAS.name, USER_VECTORS.name):
                flink.cancel_job(job_id)
        runner.down()

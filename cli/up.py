"""The steps of ``nrtrec up`` after the services are healthy: encoders, indexes, streaming
jobs, then the demo data (the MovieLens listings now, its clicks paced by a process of their
own)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nrtrec.core.access import triton_admin_headers
from nrtrec.core.settings import Settings
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.base import Process
from nrtrec.deploy.services.flink import FlinkService
from nrtrec.deploy.services.query_nodes import nrtrec_command
from nrtrec.query_node.client import BlockingQueryClient
from nrtrec.schemas.query_api import CreateIndexRequest, Metric
from nrtrec.streaming.submit import ensure_jobs

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def start_pipeline(runner: LocalRunner, on_progress: Say) -> None:
    """Encoders, indexes and streaming jobs, then the demo data: listings now, clicks paced."""
    from rich.progress import Progress

    from nrtrec.streaming.replay import replay_listings

    settings = runner.settings
    versions = ensure_models(settings, on_progress)
    ensure_indexes(settings, versions)
    ensure_jobs(settings, FlinkService(settings), on_progress)
    # From now on the keeper resubmits a job that is gone (its JobManager restarted, say).
    runner.run(Process("jobs-keeper", nrtrec_command("jobs", "keep"), settings=settings))
    replayed = settings.run_dir / "listings.replayed"
    if not replayed.exists():  # once per run dir: the catalogue is on a compacted topic
        with Progress() as bar:
            task = bar.add_task("replaying MovieLens listings", total=None)
            replay_listings(settings, lambda d, t: bar.update(task, completed=d, total=t))
        replayed.touch()
    rate = settings.streaming.replay_rate
    on_progress(f"replaying MovieLens clicks at {rate:g}/s (log: {settings.run_dir}/logs)")
    runner.run(Process("replay", nrtrec_command("replay", "--stay"), settings=settings))


def ensure_models(settings: Settings, on_progress: Say = lambda m: None) -> list[int]:
    """Train a first encoder pair when none is registered; serve every registered version but
    the retired ones (``nrtrec models retire``), which stay out until rolled out again."""
    from nrtrec.inference.client import model_repository
    from nrtrec.inference.lifecycle import ModelLifecycle
    from nrtrec.inference.repository import ModelRepository
    from nrtrec.rollout.retired import RetiredVersions

    repository = ModelRepository(model_repository(settings))
    if not repository.versions():
        from nrtrec.inference.training.pipeline import train_pair
        from nrtrec.inference.training.train import TrainConfig

        on_progress("training the first encoder pair on MovieLens-100k (about a minute)")
        config = TrainConfig(dim=settings.inference.dim, max_history=settings.inference.max_history)
        train_pair(config, settings.inference.max_tokens, repository=repository)
    lifecycle = ModelLifecycle(
        repository, settings.triton.grpc_url, triton_admin_headers(settings.token)
    )
    retired = RetiredVersions(settings).versions()
    try:
        for version in repository.versions():
            if version in retired:
                continue
            if version not in lifecycle.served():
                on_progress(f"loading encoder version {version} on Triton")
                lifecycle.load(version)
        return sorted(lifecycle.served())
    finally:
        lifecycle.close()


def ensure_indexes(settings: Settings, versions: list[int]) -> None:
    """An index per served version on every shard, through the query API (``gateway.url``).

    Always asked for, never skipped because a listing shows it: the gateway's listing is the
    union of the shards, and a ``PUT`` of an existing spec changes nothing (200), its state
    (serving or building) included. A new deployment (no serving version yet) serves every
    version at once; after that a version new to the indexes is created *building*, and
    ``nrtrec models rollout N`` fills it and serves it: a version trained since the last
    ``nrtrec up`` is never served half-filled.
    """
    name = settings.query_node.index_name
    with BlockingQueryClient.of(settings, timeout_s=30.0) as client:
        listing = [i for i in client.indexes() if i.name == name]
        deployed = any(i.serving for i in listing)
        # A listed version keeps the state it is listed in: a PUT asking a node that restored
        # a building version (before reading its declarations) to serve it would promote it.
        listed = {i.model_version: i.serving for i in listing}
        for version in versions:
            spec = CreateIndexRequest(
                dim=settings.inference.dim,
                metric=Metric.COSINE,
                model_version=version,
                serving=listed.get(version, not deployed),
            )
            _, created = client.create_index(name, spec)
            if created and not spec.serving:
                log.warning(
                    "index %s v%d created building: `nrtrec models rollout %d` serves it",
                    name,
                    version,
                    version,
                )

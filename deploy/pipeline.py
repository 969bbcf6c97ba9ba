"""The steps of `nrtrec up` after the services are healthy: encoders, indexes, streaming jobs."""

from __future__ import annotations

import logging

import httpx

from nrtrec.deploy.services.flink import FlinkService
from nrtrec.settings import Settings

log = logging.getLogger(__name__)


def ensure_models(settings: Settings, on_progress=lambda m: None) -> list[int]:
    """Train a first encoder pair when none is registered; serve every registered version."""
    from nrtrec.inference.client import model_repository
    from nrtrec.inference.lifecycle import ModelLifecycle
    from nrtrec.inference.repository import ModelRepository

    repository = ModelRepository(model_repository(settings))
    if not repository.versions():
        from nrtrec.inference.training.pipeline import train_pair
        from nrtrec.inference.training.train import TrainConfig

        on_progress("training the first encoder pair on MovieLens-100k (about a minute)")
        config = TrainConfig(dim=settings.inference.dim, max_history=settings.inference.max_history)
        train_pair(config, settings.inference.max_tokens, repository=repository)
    lifecycle = ModelLifecycle(repository, settings.triton.grpc_url)
    try:
        for version in repository.versions():
            if version not in lifecycle.served():
                on_progress(f"loading encoder version {version} on Triton")
                lifecycle.load(version)
        return sorted(lifecycle.served())
    finally:
        lifecycle.close()


def ensure_indexes(settings: Settings, versions: list[int], gateway_url: str | None = None) -> None:
    """An ``items`` index per served version on every shard (through the gateway)."""
    url = gateway_url or settings.gateway.url
    headers = {"authorization": f"Bearer {settings.token}"} if settings.token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        existing = client.get("/v1/indexes")
        existing.raise_for_status()
        have = {(i["name"], i["model_version"]) for i in existing.json()}
        name = settings.query_node.index_name
        for version in versions:
            if (name, version) in have:
                continue
            r = client.put(
                f"/v1/indexes/{name}",
                json={"dim": settings.inference.dim, "metric": "cosine", "model_version": version},
            )
            if r.status_code not in (200, 201, 409):
                raise RuntimeError(f"creating index {name} v{version}: {r.status_code} {r.text}")


def ensure_jobs(settings: Settings, flink: FlinkService, on_progress=lambda m: None) -> dict:
    """Submit each streaming job that is not running, from its newest checkpoint if any."""
    from nrtrec.streaming.errors import NoCheckpoint
    from nrtrec.streaming.submit import (
        ITEM_DELTAS,
        JOBS,
        latest_checkpoint,
        running_jobs,
        submit,
    )

    running = running_jobs(flink)
    ids = {}
    for job in JOBS:
        if job.name in running:
            ids[job.name] = running[job.name]
            continue
        try:
            restore = latest_checkpoint(settings, job)
        except NoCheckpoint:
            restore = None
        extra = []
        bulk = (settings.streaming.bulk_dir or settings.run_dir / "bulk") / "bulk.json"
        if job is ITEM_DELTAS and restore is None and bulk.is_file():
            # DELTA after BULK: continue from the listings offsets the bulk run recorded.
            extra = ["--listings-offsets", str(bulk.resolve())]
        on_progress(f"submitting {job.name}" + (f" from {restore}" if restore else ""))
        ids[job.name] = submit(flink, settings, job, restore_from=restore, extra_args=extra)
    return ids

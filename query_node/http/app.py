"""The app factory: one ``QueryNode`` per app, restored from snapshots at start-up and saved
at shutdown by the lifespan, handed to handlers through ``request.state``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from nrtrec.query_node.http import errors, health, indexes
from nrtrec.query_node.http.metrics import LatencyMiddleware, Metrics
from nrtrec.query_node.node import QueryNode
from nrtrec.query_node.registry import IndexRegistry
from nrtrec.settings import Settings

log = logging.getLogger(__name__)


class State(TypedDict):
    node: QueryNode
    metrics: Metrics


def create_app(settings: Settings | None = None, registry: IndexRegistry | None = None) -> FastAPI:
    """A query-node app. ``registry`` lets a caller (a test, the delta consumer) share indexes
    with it; snapshots on disk fill in the versions it lacks."""
    settings = settings or Settings()
    node = QueryNode(settings, registry)
    metrics = Metrics(node.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        loaded = await asyncio.to_thread(node.restore)
        log.info("loaded %d index version(s) from %s", len(loaded), node.snapshots.data_dir)
        try:
            yield {"node": node, "metrics": metrics}
        finally:
            await asyncio.to_thread(node.close)

    app = FastAPI(
        title="nrtrec query node",
        summary="In-memory HNSW indexes with attribute filters",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(indexes.router)
    return app

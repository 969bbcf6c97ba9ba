"""The app factory: one ``QueryNode`` per app, restored from snapshots at start-up and saved
at shutdown by the lifespan, handed to handlers through ``request.state``. With
``query_node.consume_deltas`` the lifespan also runs the ``item-deltas`` consumer, and with
``query_node.snapshot_interval_s`` periodic snapshots (``nrtrec.query_node.deltas``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from nrtrec.core.settings import Settings
from nrtrec.core.web.timing import LatencyMiddleware
from nrtrec.query_node.deltas import DeltaConsumer, Snapshotter
from nrtrec.query_node.http import errors, health, indexes, loading
from nrtrec.query_node.http.metrics import Metrics
from nrtrec.query_node.node import QueryNode
from nrtrec.query_node.registry import IndexRegistry

log = logging.getLogger(__name__)


class State(TypedDict):
    node: QueryNode
    metrics: Metrics
    snapshotter: Snapshotter
    deltas: DeltaConsumer | None


def create_app(settings: Settings | None = None, registry: IndexRegistry | None = None) -> FastAPI:
    """A query-node app. ``registry`` lets a caller (a test, the delta consumer) share indexes
    with it; snapshots on disk fill in the versions it lacks."""
    settings = settings or Settings()
    node = QueryNode(settings, registry)
    metrics = Metrics(node.registry)
    qn = settings.query_node
    deltas = DeltaConsumer(node, metrics_registry=metrics.registry) if qn.consume_deltas else None
    snapshotter = Snapshotter(node, qn.snapshot_interval_s, deltas)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        loaded = await asyncio.to_thread(node.restore)
        log.info("loaded %d index version(s) from %s", len(loaded), node.snapshots.data_dir)
        if deltas is not None:
            try:
                # After restore: partitions resume from the restored snapshots' offsets.
                await asyncio.to_thread(deltas.start)
            except Exception:
                log.exception("the item-deltas consumer did not start; serving without it")
        snapshotter.start()
        try:
            yield {"node": node, "metrics": metrics, "snapshotter": snapshotter, "deltas": deltas}
        finally:
            await asyncio.to_thread(snapshotter.stop)
            if deltas is not None:
                await asyncio.to_thread(deltas.stop)
            # Last, with nothing applying: the final snapshot's offsets match its indexes.
            await asyncio.to_thread(node.close)

    app = FastAPI(
        title="nrtrec query node",
        summary="In-memory HNSW indexes with attribute filters",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(LatencyMiddleware, request_seconds=metrics.request_seconds)
    app.include_router(health.router)
    app.include_router(indexes.router)
    app.include_router(loading.router)
    return app

"""The app factory: one ``QueryNode`` per app, restored from snapshots at start-up and saved
at shutdown by the lifespan, handed to handlers through ``request.state``; periodic snapshots
(``query_node.snapshot_interval_s``, ``snapshot_every_deltas``).

With ``query_node.consume_deltas`` the node also follows Kafka: at start it reads the index
declarations to their end and builds every declared index it has no snapshot of, then replays
``item-deltas`` from where its snapshots stop (from the beginning for an index without one), and
goes on applying deltas and following declarations (``nrtrec.query_node.deltas``,
``nrtrec.query_node.declarations``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from nrtrec.core.heap import serving_heap
from nrtrec.core.settings import Settings
from nrtrec.core.web.limits import BodyLimitMiddleware
from nrtrec.core.web.timing import LatencyMiddleware
from nrtrec.query_node.declarations import Declarations
from nrtrec.query_node.deltas import DeltaConsumer, Snapshotter
from nrtrec.query_node.http import errors, health, indexes, loading
from nrtrec.query_node.http.metrics import Metrics
from nrtrec.query_node.http.search_path import SEARCH_ROUTE, SearchFastPath
from nrtrec.query_node.node import QueryNode
from nrtrec.query_node.registry import IndexRegistry

log = logging.getLogger(__name__)


class State(TypedDict):
    node: QueryNode
    metrics: Metrics
    snapshotter: Snapshotter
    deltas: DeltaConsumer | None
    declarations: Declarations | None


def create_app(
    settings: Settings | None = None,
    registry: IndexRegistry | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """A query-node app. ``registry`` lets a caller (a test, the delta consumer) share indexes
    with it; snapshots on disk fill in the versions it lacks. ``freeze_heap``: see
    ``core.heap.serving_heap`` (the indexes restored at start-up are frozen with the rest)."""
    settings = settings or Settings()
    node = QueryNode(settings, registry)
    metrics = Metrics(node.registry)
    qn = settings.query_node
    declarations = Declarations(node) if qn.consume_deltas else None
    deltas = (
        DeltaConsumer(node, metrics_registry=metrics.registry, declarations=declarations)
        if qn.consume_deltas
        else None
    )
    snapshotter = Snapshotter(node, qn.snapshot_interval_s, deltas, qn.snapshot_every_deltas)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        loaded = await asyncio.to_thread(node.restore)
        log.info("loaded %d index version(s) from %s", len(loaded), node.snapshots.data_dir)
        if declarations is not None:
            await asyncio.to_thread(_build_declared, node, declarations)
        if deltas is not None:
            try:
                # After restore: partitions resume from the restored snapshots' offsets.
                await asyncio.to_thread(deltas.start)
            except Exception:
                log.exception("the item-deltas consumer did not start; serving without it")
        snapshotter.start()
        try:
            with serving_heap(metrics.gc, freeze=freeze_heap):
                yield {
                    "node": node,
                    "metrics": metrics,
                    "snapshotter": snapshotter,
                    "deltas": deltas,
                    "declarations": declarations,
                }
        finally:
            await asyncio.to_thread(snapshotter.stop)
            if deltas is not None:
                await asyncio.to_thread(deltas.stop)
            if declarations is not None:
                await asyncio.to_thread(declarations.close)
            # Last, with nothing applying: the final snapshot's offsets match its indexes.
            await asyncio.to_thread(node.close)

    app = FastAPI(
        title="nrtrec query node",
        summary="In-memory HNSW indexes with attribute filters",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(indexes.router)
    app.include_router(loading.router)
    # Added first, so innermost: inside the body limit and the timing, like the routes.
    search_route = next(
        r for r in indexes.router.routes if getattr(r, "path", None) == SEARCH_ROUTE
    )
    app.add_middleware(SearchFastPath, route=search_route)
    app.add_middleware(LatencyMiddleware, request_seconds=metrics.request_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=qn.max_body_bytes)
    return app


def _build_declared(node: QueryNode, declarations: Declarations) -> None:
    """The declared indexes this node lacks, built empty before deltas apply; when one was,
    every partition is replayed from its beginning (the indexes restored from snapshots skip
    what they hold: ``QueryNode.floor``)."""
    try:
        changes = declarations.catch_up(timeout_s=30.0)
    except Exception:
        # Kafka may be starting too: the consumer catches up at the first delta it cannot place.
        log.exception("index declarations not read at start; serving what the snapshots hold")
        return
    if changes.created:
        log.info("declared but without a snapshot here: %s; replaying item-deltas", changes.created)
        node.offsets = {}

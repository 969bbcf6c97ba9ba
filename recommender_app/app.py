"""The app factory: the recommender app's HTTP API (DESIGN.md) and the homepage module.

The lifespan makes every client once (the user-vector store, the query API's client: the shards
themselves or the gateway, the Kafka producer of clicks and impressions) and hands them to
handlers through ``request.state``; it runs the popular-items refresh in the background and
closes everything at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nrtrec.core.heap import serving_heap
from nrtrec.core.settings import Settings
from nrtrec.core.web.limits import BodyLimitMiddleware
from nrtrec.core.web.timing import LatencyMiddleware
from nrtrec.query_node.client import QueryClient, QueryReader, ShardedQueryClient
from nrtrec.recommender_app import errors
from nrtrec.recommender_app.arms import Arms
from nrtrec.recommender_app.clicks import ClickPublisher
from nrtrec.recommender_app.deps import Services
from nrtrec.recommender_app.fresh_pool import FreshListings
from nrtrec.recommender_app.impressions import ImpressionLog
from nrtrec.recommender_app.metrics import Metrics
from nrtrec.recommender_app.popular import PopularItems
from nrtrec.recommender_app.producer import AppProducer
from nrtrec.recommender_app.routes import events, health, homepage, recommend
from nrtrec.recommender_app.service import Recommender
from nrtrec.recommender_app.store import AsyncStore
from nrtrec.recommender_app.versions import LiveVersions
from nrtrec.user_store import UserVectorStore

log = logging.getLogger(__name__)


class State(TypedDict):
    services: Services


def create_app(
    settings: Settings | None = None,
    store: UserVectorStore | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """The recommender app. ``store`` lets a caller share an open store (it is not closed);
    without one the app opens ``settings.user_store.backend`` itself. ``freeze_heap``: see
    ``core.heap.serving_heap``."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        cfg = settings.app
        async_store = AsyncStore(settings, store)
        gateway = await _open_reader(settings, metrics)
        versions = LiveVersions(gateway, cfg.index_name, cfg.versions_ttl_s)
        popular = PopularItems(settings, async_store, gateway, versions)
        fresh = FreshListings(settings, gateway, versions)
        producer = AppProducer(settings)
        services = Services(
            settings=settings,
            store=async_store,
            versions=versions,
            popular=popular,
            recommender=Recommender(settings, async_store, gateway, versions, popular, fresh),
            publisher=ClickPublisher(settings, producer),
            metrics=metrics,
            arms=Arms(settings.experiment),
            impressions=ImpressionLog(settings, producer, metrics),
        )
        refresh = asyncio.create_task(popular.run(), name="popular-items")
        # Only with a boost: the pool is of no use without one.
        fresh_refresh = (
            asyncio.create_task(fresh.run(), name="fresh-listings") if cfg.fresh_boost else None
        )
        log.info("recommender app: query API at %s, index %r", gateway.base_url, cfg.index_name)
        if settings.experiment.name:
            arms = ", ".join(a.name for a in settings.experiment.arms)
            log.info("experiment %r: arms %s", settings.experiment.name, arms)
        try:
            with serving_heap(metrics.gc, freeze=freeze_heap):
                yield {"services": services}
        finally:
            for task in (refresh, fresh_refresh):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await gateway.close()
            await asyncio.to_thread(producer.close)
            await asyncio.to_thread(async_store.close)

    app = FastAPI(
        title="nrtrec recommender app",
        summary="Based on your recent views, similar items, click tracking",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(LatencyMiddleware, request_seconds=metrics.request_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.app.max_body_bytes)
    app.include_router(health.router)
    app.include_router(recommend.router)
    app.include_router(events.router)
    app.include_router(homepage.router)
    app.mount(homepage.STATIC_URL, StaticFiles(directory=homepage.STATIC_DIR), name="static")
    return app


async def _open_reader(settings: Settings, metrics: Metrics) -> QueryReader:
    """The app's client of the query API: the shards themselves (the fan-out in this process,
    one hop fewer) or the gateway, as ``settings.app.query_path`` says."""
    cfg = settings.app
    if cfg.reads_shards(settings.gateway):
        return await ShardedQueryClient.open(
            settings,
            timeout_s=cfg.search_timeout_s,
            on_failure=metrics.upstream_failure,
            on_partial=metrics.partial_search,
        )
    # No retries: a request's deadline leaves no room for a second try (it degrades).
    return QueryClient.of(
        settings,
        timeout_s=cfg.search_timeout_s,
        retries=0,
        max_connections=cfg.max_connections,
    )

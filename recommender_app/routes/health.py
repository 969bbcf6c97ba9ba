"""Liveness and Prometheus metrics; both open and cheap (no call to a dependency)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from nrtrec.recommender_app.deps import AppServices

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(services: AppServices) -> dict[str, object]:
    """``ok``, or ``degraded`` when the last popular-items refresh could not reach the store or
    the last index listing the gateway; the app answers either way (200)."""
    popular = services.popular.current
    listing = services.versions.last
    age = None if popular.refreshed_at is None else time.monotonic() - popular.refreshed_at
    problems = []
    if popular.error is not None:
        problems.append(f"store: {popular.error}")
    if listing is not None and listing.stale is not None:
        problems.append(f"gateway: {listing.stale}")
    return {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "live_versions": sorted(listing.by_version) if listing else [],
        "popular_items": len(popular.items),
        "popular_age_s": None if age is None else round(age, 1),
    }


@router.get("/metrics")
async def metrics(services: AppServices) -> Response:
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

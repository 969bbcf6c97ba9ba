"""``POST /v1/events``: click tracking, published to the ``clicks`` topic."""

from __future__ import annotations

import time

from fastapi import APIRouter, status

from nrtrec.recommender_app.clicks import PublishFailed
from nrtrec.recommender_app.deps import AppServices
from nrtrec.recommender_app.models import Accepted, ClickIn

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        422: {"description": "not a click event, or dated ahead of the app's clock"},
        503: {"description": "neither the broker nor the app's spool took it"},
    },
)
async def post_event(body: ClickIn, services: AppServices) -> Accepted:
    """Answers 202 once the broker acknowledged the event (keyed by user id), or, when it does
    not in time, once the event is in the app's spool on disk (``spooled``: sent later). A
    ``ts`` more than ``max_clock_skew_s`` ahead of the app's clock is a 422."""
    now_ms = time.time_ns() // 1_000_000
    event = body.event(now_ms).check_clock(now_ms, services.settings.max_clock_skew_s)
    try:
        delivered = await services.publisher.publish(event)
    except PublishFailed:
        services.metrics.events.labels("failed").inc()
        raise
    services.metrics.events.labels("spooled" if delivered.spooled else "published").inc()
    return Accepted(
        event=event,
        topic=delivered.topic,
        partition=delivered.partition,
        offset=delivered.offset,
        spooled=delivered.spooled,
    )

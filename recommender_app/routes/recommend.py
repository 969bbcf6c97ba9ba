"""``GET /v1/users/{user_id}/recommendations``, ``GET /v1/items/{item_id}/similar`` and
``GET /v1/users/{user_id}/recent-views``.

Answers are serialised straight to JSON (the shape of ``Recommendations``), skipping a model
per item on the hot path; ``Server-Timing`` says where the time went (store, search, app).

Every list served to a user (``recommend_user``: this endpoint and the homepage's module) is
under the user's experiment arm, gets a ``request_id`` and is logged to ``impressions`` without
waiting for the broker. Similar items answer for an item, not a user: no arm, no impression.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from nrtrec.recommender_app.deps import (
    RESERVED,
    AppServices,
    ItemId,
    RequestTimings,
    Services,
    UserId,
    parse_k,
)
from nrtrec.recommender_app.models import RecentViews, Recommendations
from nrtrec.recommender_app.service import Answer
from nrtrec.recommender_app.timing import Timings
from nrtrec.schemas import Impression
from nrtrec.schemas.filters import Filter, filter_from_query

router = APIRouter(prefix="/v1", tags=["recommendations"])

FILTER_DOC = (
    "Other query parameters filter on item attributes: `category=Comedy` (repeat for any of "
    "several), `location.in=US,CA`, `category.ne=Horror`, `price.gte=10&price.lt=50`, "
    "`year=1995`; unknown or ill-formed ones are a 400."
)


def _query(request: Request, services: Services) -> tuple[int, Filter]:
    params = request.query_params
    k = parse_k(params.get("k"), services.settings)
    pairs = [(name, value) for name, value in params.multi_items() if name not in RESERVED]
    settings = services.settings
    # The nodes' own limits: a filter they would refuse is refused here, before any search.
    limits = settings.query_node.filter_limits()
    return k, filter_from_query(pairs, settings.app.filter_attributes, limits)


def _respond(endpoint: str, answer: Answer, services: Services, t: Timings) -> Response:
    metrics = services.metrics
    version = "none" if answer.model_version is None else str(answer.model_version)
    metrics.answers.labels(endpoint, answer.source.value, version).inc()
    if answer.model_version is not None:
        # The drift signal is the search's own best score, not one a prior was added to.
        top = answer.top_similarity
        if top is None and answer.items:
            top = answer.items[0]["score"]  # similar items: no prior
        if top is not None:
            metrics.top_score.labels(endpoint, version).observe(top)
        if answer.vector_age_s is not None:
            metrics.user_vector_age.labels(version).observe(answer.vector_age_s)
    for reason in answer.reasons:
        metrics.degraded.labels(endpoint, reason.split(":", 1)[0]).inc()
    for stage, seconds in t.spent.items():
        metrics.stage_seconds.labels(endpoint, stage).observe(seconds)
    content = {
        "items": answer.items,
        "model_version": answer.model_version,
        "source": answer.source.value,
        "degraded": bool(answer.reasons),
        "reasons": answer.reasons,
        "arm": answer.arm,
        "request_id": answer.request_id,
        "popularity_prior": answer.popularity_prior,
        "fresh_boost": answer.fresh_boost,
    }
    body = to_json(content)
    return Response(body, media_type="application/json", headers={"Server-Timing": t.header()})


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    description="Based on the user's recent views. " + FILTER_DOC,
    responses={400: {"description": "bad k or filter"}},
)
async def recommendations(
    user_id: UserId, request: Request, services: AppServices, t: RequestTimings
) -> Response:
    k, filter = _query(request, services)
    answer = await recommend_user(services, user_id, k, filter, t)
    return _respond("recommendations", answer, services, t)


async def recommend_user(
    services: Services, user_id: str, k: int, filter: Filter, t: Timings
) -> Answer:
    """The user's list under their arm, with a fresh ``request_id``, logged as an impression
    (queued for the broker, never waited for)."""
    arm = services.arms.assign(user_id)
    answer = await services.recommender.for_user(user_id, k, filter, t, arm)
    answer.request_id = uuid.uuid4().hex
    services.impressions.log(
        Impression(
            request_id=answer.request_id,
            experiment=services.arms.experiment,
            user_id=user_id,
            arm=answer.arm,
            model_version=answer.model_version,
            source=answer.source,
            items=[item["id"] for item in answer.items],
            ts=time.time_ns() // 1_000_000,
        )
    )
    return answer


@router.get(
    "/items/{item_id}/similar",
    response_model=Recommendations,
    description="Items near this one, in the newest version that holds it. " + FILTER_DOC,
    responses={400: {"description": "bad k or filter"}},
)
async def similar(
    item_id: ItemId, request: Request, services: AppServices, t: RequestTimings
) -> Response:
    k, filter = _query(request, services)
    answer = await services.recommender.similar(item_id, k, filter, t)
    return _respond("similar", answer, services, t)


@router.get("/users/{user_id}/recent-views", response_model=RecentViews)
async def recent_views(user_id: UserId, services: AppServices, t: RequestTimings) -> Response:
    items, reasons = await services.recommender.recent_views(user_id, t)
    content = {"items": items, "degraded": bool(reasons), "reasons": reasons}
    return Response(
        to_json(content), media_type="application/json", headers={"Server-Timing": t.header()}
    )

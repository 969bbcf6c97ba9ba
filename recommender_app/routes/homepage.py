"""``GET /``: the homepage module "Based on your recent views" for ``?user=``.

Rendered on the server (the first paint needs no script); ``static/home.js`` records clicks and
refreshes the lists from the JSON API, and pivots to an item's similar items.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from nrtrec.recommender_app.deps import AppServices
from nrtrec.recommender_app.routes.recommend import recommend_user
from nrtrec.recommender_app.timing import Timings
from nrtrec.schemas.filters import Filter
from nrtrec.schemas.types import ID_MAX_LENGTH, ID_PATTERN

HERE = Path(__file__).resolve().parent.parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/static"

router = APIRouter(tags=["homepage"])

# Autoescaped: titles come from listings, i.e. from sellers.
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)

UserQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="a user id"),
]


@router.get("/", response_class=HTMLResponse)
async def homepage(services: AppServices, user: UserQuery = None) -> HTMLResponse:
    template = _templates.get_template("home.html")
    if user is None:
        return HTMLResponse(template.render(user=None, static=STATIC_URL))
    app = services.settings.app
    # Each list has a request's budget of its own; they run side by side. The recommendations
    # are a served list like the API's: under the user's arm, logged as an impression.
    recent_t, recs_t = Timings(app.deadline_s), Timings(app.deadline_s)
    (recent, recent_reasons), recs = await asyncio.gather(
        services.recommender.recent_views(user, recent_t),
        recommend_user(services, user, app.default_k, Filter(), recs_t),
    )
    html = template.render(
        user=user,
        k=app.default_k,
        recent=recent,
        recs={
            "items": recs.items,
            "source": recs.source.value,
            "model_version": recs.model_version,
            "reasons": recs.reasons + recent_reasons,
            "request_id": recs.request_id,
        },
        static=STATIC_URL,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})

"""What handlers receive by injection: the app's services, made by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from nrtrec.core.settings import Settings
from nrtrec.recommender_app.arms import Arms
from nrtrec.recommender_app.clicks import ClickPublisher
from nrtrec.recommender_app.errors import BadParameter
from nrtrec.recommender_app.impressions import ImpressionLog
from nrtrec.recommender_app.metrics import Metrics
from nrtrec.recommender_app.popular import PopularItems
from nrtrec.recommender_app.service import Recommender
from nrtrec.recommender_app.store import AsyncStore
from nrtrec.recommender_app.timing import Timings
from nrtrec.recommender_app.versions import LiveVersions
from nrtrec.schemas.types import ID_MAX_LENGTH, ID_PATTERN


@dataclass
class Services:
    settings: Settings
    store: AsyncStore
    versions: LiveVersions
    popular: PopularItems
    recommender: Recommender
    publisher: ClickPublisher
    metrics: Metrics
    arms: Arms
    impressions: ImpressionLog


# async: FastAPI would run a plain function in the thread pool, a hop per dependency.
async def _services(request: Request) -> Services:
    return request.state.services


async def _timings(request: Request) -> Timings:
    return Timings(request.state.services.settings.app.deadline_s)


AppServices = Annotated[Services, Depends(_services)]
RequestTimings = Annotated[Timings, Depends(_timings)]
# Ids as the schemas define them, so that a path can name every id a write accepted.
UserId = Annotated[
    str,
    Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="a user id"),
]
ItemId = Annotated[
    str,
    Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN, description="an item id"),
]

# Query parameters of the recommendation endpoints that are not attribute filters.
RESERVED = frozenset({"k"})


def parse_k(raw: str | None, settings: Settings) -> int:
    app = settings.app
    if raw is None:
        return app.default_k
    # Digits only: int() would also read " 10", "+10" and "1_0".
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise BadParameter(f"k must be an integer between 1 and {app.max_k}, got {raw[:20]!r}")
    k = int(raw)
    if not 1 <= k <= app.max_k:
        raise BadParameter(f"k must be between 1 and {app.max_k}, got {k}")
    return k

"""HTTP bodies of the recommender app (DESIGN.md, "Recommender app HTTP API")."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, field_serializer

from nrtrec.schemas import Action, ClickEvent, Source
from nrtrec.schemas.types import Count, Id, Record, RequestId

# The arm of an answer when no experiment runs (and of similar items, which no arm changes).
DEFAULT_ARM = "default"


class RecommendedItem(BaseModel):
    id: str
    # The search score (DESIGN: similarity for ip/cosine, distance for l2), or the view count
    # for popular items; with a popularity prior, the search score plus its weight times the
    # item's prior, plus the fresh boost for a fresh listing (what the list is ranked by).
    score: float
    title: str | None = None
    # Additive: the search score alone, when a popularity prior or a fresh boost was added to
    # the list's scores (else absent).
    similarity: float | None = None
    # Additive: true for a fresh listing (its `listed_at` within the app's fresh window) whose
    # score has the fresh boost (else absent).
    fresh: bool | None = None


class Recommendations(BaseModel):
    """``GET /v1/users/{user_id}/recommendations`` and ``GET /v1/items/{item_id}/similar``."""

    items: list[RecommendedItem]
    # The version of the vectors matched; null for popular items.
    model_version: int | None
    source: Source
    # Additive: true when a dependency was slow or down and the answer is what was available
    # (popular items instead of personalized ones, or a shard's items missing); ``reasons``
    # says what happened.
    degraded: bool = False
    reasons: list[str] = Field(default_factory=list)
    # The experiment arm the user is assigned to (settings.experiment); "default" when none runs.
    arm: str = DEFAULT_ARM
    # This list's id: its record on the ``impressions`` topic, and what a click on one of its
    # items sends back (POST /v1/events). Null for similar items, which are not logged.
    request_id: str | None = None
    # Additive: the weight of the popularity prior in the scores; 0 when the list is ranked by
    # search scores alone (within a session, or popular items). A user whose newest click is
    # older than the app's session gap gets the prior (recommender_app/prior.py).
    popularity_prior: float = 0.0
    # Additive: the boost in the scores of the items marked `fresh`; 0 when none is
    # (recommender_app/fresh.py).
    fresh_boost: float = 0.0


class ViewedItem(BaseModel):
    id: str
    title: str | None = None


class RecentViews(BaseModel):
    """``GET /v1/users/{user_id}/recent-views`` (additive; the homepage's first list): the
    items the user's newest vector was made from, newest first."""

    items: list[ViewedItem]
    degraded: bool = False
    reasons: list[str] = Field(default_factory=list)


class ClickIn(Record):
    """``POST /v1/events``: a ``ClickEvent`` whose ``event_id`` (a uuid4), ``ts`` (now) and
    ``action`` (click) may be left out; ``request_id`` is the answer the item was shown in."""

    event_id: Id | None = None
    user_id: Id
    item_id: Id
    action: Action = Action.CLICK
    # A JSON integer (ms since the epoch), as every integer of a request body.
    ts: Count | None = Field(default=None, ge=0)
    request_id: RequestId | None = None

    def event(self, now_ms: int) -> ClickEvent:
        return ClickEvent(
            event_id=self.event_id or str(uuid.uuid4()),
            user_id=self.user_id,
            item_id=self.item_id,
            action=self.action,
            ts=self.ts if self.ts is not None else now_ms,
            request_id=self.request_id,
        )


class Accepted(BaseModel):
    """The event as published, and where the broker put it."""

    event: ClickEvent
    topic: str
    # Where the broker put it; null while it waits in the app's spool for a broker that did not
    # acknowledge in time (``spooled``): accepted all the same, and sent when the broker is back.
    partition: int | None
    offset: int | None
    spooled: bool = False

    @field_serializer("event")
    def _as_published(self, event: ClickEvent) -> dict[str, Any]:
        # As the record on the topic: a click without a request_id has no such field.
        return event.model_dump(mode="json", exclude_none=True)

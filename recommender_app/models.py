"""HTTP bodies of the recommender app (DESIGN.md, "Recommender app HTTP API")."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, Field

from nrtrec.schemas import Action, ClickEvent
from nrtrec.schemas.types import Count, Id, Record


class Source(StrEnum):
    """Which path an answer took (DESIGN.md, "Embedding versions")."""

    # The newest vector (of the user; of the item for similar items) against its own version.
    PERSONALIZED = "personalized"
    # An older version's vector against that version's index: the newest had no live index.
    OLDER_VERSION = "older-version"
    # The most viewed items: no vector, no live index for any of them, or a failure.
    POPULAR = "popular"


class RecommendedItem(BaseModel):
    id: str
    # The search score (DESIGN: similarity for ip/cosine, distance for l2), or the view count
    # for popular items.
    score: float
    title: str | None = None


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
    ``action`` (click) may be left out."""

    event_id: Id | None = None
    user_id: Id
    item_id: Id
    action: Action = Action.CLICK
    # A JSON integer (ms since the epoch), as every integer of a request body.
    ts: Count | None = Field(default=None, ge=0)

    def event(self, now_ms: int) -> ClickEvent:
        return ClickEvent(
            event_id=self.event_id or str(uuid.uuid4()),
            user_id=self.user_id,
            item_id=self.item_id,
            action=self.action,
            ts=self.ts if self.ts is not None else now_ms,
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

"""Events that producers publish: clicks and listing changes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator

from nrtrec.schemas.errors import InvalidRecord
from nrtrec.schemas.types import Id, Record, RequestId, TimestampMs


class Action(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"


class ClickEvent(Record):
    """Topic ``clicks``, key ``user_id``. ``request_id``: the served list the click came from
    (its ``impressions`` record), when the client knows it."""

    event_id: Id
    user_id: Id
    item_id: Id
    action: Action
    ts: TimestampMs
    request_id: RequestId | None = None

    def key(self) -> str:
        return self.user_id

    def check_clock(self, now_ms: int, max_skew_s: float) -> ClickEvent:
        """This click, unless its ``ts`` is more than ``max_skew_s`` ahead of ``now_ms``
        (``InvalidRecord``): a history is ordered by ``ts``, so a click dated tomorrow would
        stay its user's newest view until tomorrow. Any age is fine: clicks arrive late."""
        ahead_s = (self.ts - now_ms) / 1000
        if ahead_s > max_skew_s:
            raise InvalidRecord(
                "ClickEvent",
                [f"ts: {ahead_s:.1f} s ahead of the receiver's clock (at most {max_skew_s:g} s)"],
            )
        return self


class ListingOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


#: The index attribute (and ``ListingEvent`` field) that says when a listing was first
#: published: what makes a listing fresh to the recommender app (``app.fresh_listing_s``).
LISTED_AT = "listed_at"


class ListingEvent(Record):
    """Topic ``listings``, key ``item_id``. A delete needs only ids and ``ts``.

    ``listed_at`` (additive, optional): when the listing was first published (ms), the same on
    every later update of it; ``ts`` is when this change happened. Without it the listing is
    never boosted as fresh.
    """

    event_id: Id
    op: ListingOp
    item_id: Id
    ts: TimestampMs
    title: str | None = Field(default=None, min_length=1, max_length=1000)
    category: str | None = Field(default=None, max_length=200)
    aspects: dict[str, Any] = Field(default_factory=dict)
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    location: str | None = Field(default=None, max_length=200)
    listed_at: TimestampMs | None = None

    @model_validator(mode="after")
    def _upsert_has_title(self) -> ListingEvent:
        # The item tower encodes the title; without one an upsert cannot produce a vector.
        if self.op is ListingOp.UPSERT and self.title is None:
            raise ValueError("title is required when op is 'upsert'")
        return self

    def key(self) -> str:
        return self.item_id

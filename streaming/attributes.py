"""What an item's index entry carries besides its vector: one mapping from a listing.

The bulk backfill and the item-embedding streaming job both call ``listing_attributes``, so an
item has the same attributes whichever of the two wrote it last. The recommender app filters on
``category``, ``location``, ``price`` and ``year`` (settings ``app.filter_attributes``) and shows
``title``; ``genres`` is a list, which the query node stores and returns but never matches.
``listed_at`` (when the listing was first published) is what makes it fresh to the app.
"""

from __future__ import annotations

from typing import Any

from nrtrec.schemas import LISTED_AT, ListingEvent

#: Aspects lifted to attributes of their own: the catalogue's (MovieLens) year and genres.
ASPECT_ATTRIBUTES = ("year", "genres")


def listing_attributes(listing: ListingEvent) -> dict[str, Any]:
    """The attributes of an upserted listing; absent fields are left out, not null.

    A missing attribute fails every filter condition on it, as null would, but leaving it out
    keeps the index's per-attribute postings from filling with nulls.
    """
    attributes: dict[str, Any] = {
        "title": listing.title,
        "category": listing.category,
        "price": listing.price,
        "location": listing.location,
        LISTED_AT: listing.listed_at,
    }
    for name in ASPECT_ATTRIBUTES:
        attributes[name] = _aspect(listing.aspects.get(name), name)
    return {name: value for name, value in attributes.items() if value is not None}


def _aspect(value: Any, name: str) -> Any:
    if value is None:
        return None
    if name == "year":
        # A number, so that range filters (year >= 1990) apply; "1995" from a producer that
        # sends text counts too, anything else is dropped rather than stored as a string that
        # a numeric filter would never match.
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value.strip())
        return None
    if name == "genres":
        # Always a list of strings: a single genre sent as a string becomes a one-item list.
        if isinstance(value, str):
            return [value]
        if isinstance(value, list | tuple):
            return [str(g) for g in value if g is not None]
        return None
    return value

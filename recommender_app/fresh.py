"""The fresh-listing boost: a listing listed a short while ago gets a little extra score.

A fresh listing is one whose ``listed_at`` (set by its producer: when the listing was first
published, an index attribute of every version) is no older than ``app.fresh_listing_s``; its
score gets ``app.fresh_boost`` (:mod:`.ranking`); :mod:`.fresh_pool` keeps them at hand. Without
a ``listed_at`` a listing is never fresh: an update's own time would make every price change
look new.

Why: the relevance bench (``bench/results/relevance.json``) found that the towers rank new
listings well among themselves but far below the items they were trained on (their vectors carry
those items' popularity), so a listing nobody had viewed before the model was trained almost
never reached a top 10, and content similarity to the last item beat the towers on cold items. A
small boost lifts the best-matching fresh listings into the list at little cost to the rest.
``bench.relevance`` scores this same rule (``two_tower_served``) and chooses the boost and the
window on validation; the settings' defaults are its choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nrtrec.schemas import LISTED_AT
from nrtrec.schemas.filters import Condition, Filter, Op


@dataclass(frozen=True)
class FreshBoost:
    """``boost`` for a listing listed no longer than ``fresh_s`` seconds ago (0: never)."""

    boost: float
    fresh_s: float

    def boosts(self, age_s: np.ndarray) -> np.ndarray:
        """Per listing, its boost at ``age_s`` seconds since it was listed (the bench)."""
        return np.where(np.asarray(age_s) <= self.fresh_s, self.boost, 0.0)

    def listed_since_ms(self, now_s: float) -> float:
        """The oldest ``listed_at`` (ms) that is fresh at ``now_s``."""
        return _since_ms(self.fresh_s, now_s)

    def boost_of(self, attributes: Mapping[str, Any] | None, now_s: float) -> float:
        """One listing's boost from its index attributes (none without a ``listed_at``)."""
        return self.boost_since(attributes, self.listed_since_ms(now_s))

    def boost_since(self, attributes: Mapping[str, Any] | None, since_ms: float) -> float:
        """``boost_of`` with the threshold worked out once (``listed_since_ms``) for the many
        candidates of one request."""
        listed = (attributes or {}).get(LISTED_AT)
        if not self.boost or isinstance(listed, bool) or not isinstance(listed, int | float):
            return 0.0
        return self.boost if listed >= since_ms else 0.0


def listed_within(window_s: float, now_s: float) -> Filter:
    """The filter of the listings listed at most ``window_s`` before ``now_s``."""
    return Filter((Condition(LISTED_AT, Op.GTE, _since_ms(window_s, now_s)),))


def _since_ms(window_s: float, now_s: float) -> float:
    """The oldest ``listed_at`` (ms) within ``window_s`` of ``now_s``: one rule for the boost
    and the pool's filter."""
    return (now_s - window_s) * 1000.0

"""The popularity prior: what a user who comes back after a break is shown first.

Why: the relevance bench (``bench/results/relevance.json``) found that a user who returns
after a break mostly views what is popular *now*. On each user's first events after the test
cut, the last 30 days' most viewed items score NDCG@10 0.15 and the towers alone 0.03. Within a
session the towers' own ranking is the better one. So a user whose newest click is older than
``app.session_gap_s`` gets, for each candidate, its search score plus ``weight * prior(item)``.
Within a session the list is ranked by search scores alone.

``prior`` grows with the item's views over the store's popular window (``user_store.
popular_window_days``), relative to the most viewed item: it is in [0, 1], and concave, so the
top few items do not drown the rest. An item outside the app's popular pool gets 0. The
candidates are the search's hits plus the pool, so the top ``k`` of the blended score over the
whole catalogue is among them (an item outside the pool can only rank by its search score).

``bench.relevance`` scores this same function (its method ``two_tower_prior``) and tunes
``weight`` and ``session_gap_s`` on validation; the settings' defaults are its choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# prior = log(1 + SHAPE * views / max views) / log(1 + SHAPE): 1 for the most viewed item,
# about 0.29 for one with a tenth of its views. The bench tried 10 and 100; 10 scored better.
SHAPE = 10.0


def prior(views: np.ndarray) -> np.ndarray:
    """Per item, its prior from its views in the window (the pool's most viewed item: 1)."""
    views = np.asarray(views, np.float64)
    top = float(views.max()) if views.size else 0.0
    if top <= 0.0:
        return np.zeros_like(views)
    return np.log1p(SHAPE * np.maximum(views, 0.0) / top) / np.log1p(SHAPE)


@dataclass(frozen=True)
class PopularityPrior:
    weight: float  # 0: never
    session_gap_s: float  # a newest click older than this starts a new session

    def weights_after(self, gap_s: np.ndarray) -> np.ndarray:
        """The prior's weight for users whose newest click is ``gap_s`` seconds old."""
        return np.where(np.asarray(gap_s) > self.session_gap_s, self.weight, 0.0)

    def weight_after(self, gap_s: float) -> float:
        """:meth:`weights_after` for one user (the app)."""
        return float(self.weights_after(gap_s))

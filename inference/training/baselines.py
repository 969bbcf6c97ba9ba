"""Baselines the two towers must beat, each fitted on events before a cut and then frozen.

- ``Popularity``: items by count of events before the cut, optionally only its last days
  (what is popular now, not in the whole past);
- ``LastItemContent``: cosine of MiniLM text vectors to the user's last item (every item of
  its last second, averaged: the order inside a second is unknown);
- ``CoOccurrence``: item-to-item co-views within a window of positions in each user's
  sequence, normalised, summed over the user's last few items with recency decay: the
  "people who viewed this also viewed" recommender, a strong standard baseline.

Each scores a batch of histories as ``[cases, items]`` (higher is better); the caller masks the
history items and breaks ties (:mod:`.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from nrtrec.inference.towers import normalize
from nrtrec.inference.training.timesplit import EventLog, last_second_items

DAY_S = 86_400


class Scorer(Protocol):
    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        """``at``: each case's second (only a scorer that reads the time away uses it)."""
        ...


def event_counts(log: EventLog, cut: int, window_days: int | None = None) -> np.ndarray:
    """Per item, its events in ``[cut - window_days, cut)`` (all before ``cut`` with None)."""
    keep = log.ts < cut
    if window_days is not None:
        keep &= log.ts >= cut - window_days * DAY_S
    return np.bincount(log.item[keep], minlength=log.n_items).astype(np.float64)


@dataclass(frozen=True)
class Popularity:
    counts: np.ndarray  # [items]

    @classmethod
    def fit(cls, log: EventLog, cut: int, window_days: int | None = None) -> Popularity:
        return cls(event_counts(log, cut, window_days))

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(history), len(self.counts)))


@dataclass(frozen=True)
class LastItemContent:
    text: np.ndarray  # [items, 384] MiniLM vectors; normalised here

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        text = normalize(self.text.astype(np.float64))
        last = np.stack(
            [
                text[last_second_items(h, t)].mean(axis=0)
                for h, t in zip(history, history_ts, strict=True)
            ]
        )
        return normalize(last) @ text.T


Norm = Literal["none", "cosine"]


def co_view_counts(sequences: Sequence[np.ndarray], n_items: int, window: int | None) -> np.ndarray:
    """Symmetric [items, items] counts of item pairs at most ``window`` positions apart in a
    user's sequence (None: anywhere in it); zero diagonal."""
    counts = np.zeros((n_items, n_items), np.float64)
    if window is None:
        views = np.zeros((len(sequences), n_items), np.float64)
        for u, seq in enumerate(sequences):
            views[u, seq] = 1.0
        counts = views.T @ views
    else:
        for d in range(1, window + 1):
            pairs = [(s[:-d], s[d:]) for s in sequences if len(s) > d]
            if not pairs:
                break
            a = np.concatenate([p[0] for p in pairs])
            b = np.concatenate([p[1] for p in pairs])
            np.add.at(counts, (a, b), 1.0)
        counts = counts + counts.T
    np.fill_diagonal(counts, 0.0)
    return counts


@dataclass(frozen=True)
class CoOccurrence:
    similarity: np.ndarray  # [items, items], normalised co-view counts
    popularity: np.ndarray  # [items] counts before the cut: the tie-break for unseen pairs
    last_n: int  # how many of the user's latest items vote
    decay: float  # a vote's weight: decay ** (how many later seconds the history has)

    @classmethod
    def fit(
        cls,
        counts: np.ndarray,
        popularity: np.ndarray,
        norm: Norm,
        last_n: int,
        decay: float,
    ) -> CoOccurrence:
        """From ``co_view_counts`` (computed once per window; norm and votes are cheap)."""
        if norm == "cosine":
            # Raw counts favour items popular everywhere; dividing by sqrt(n_i n_j) asks how
            # much more often the pair occurs than the two items' own frequencies suggest.
            n = np.sqrt(np.maximum(popularity, 1.0))
            similarity = counts / n[:, None] / n[None, :]
        else:
            similarity = counts
        return cls(similarity, popularity, last_n, decay)

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        out = np.zeros((len(history), self.similarity.shape[0]), np.float64)
        for i, (rows, ts) in enumerate(zip(history, history_ts, strict=True)):
            rows, ts = rows[-self.last_n :], ts[-self.last_n :]
            # Equal seconds get equal weight: their order is unknown.
            later_seconds = len(np.unique(ts)) - np.searchsorted(np.unique(ts), ts) - 1
            out[i] = (self.decay**later_seconds) @ self.similarity[rows]
        # Items with no co-view with the history fall back to popularity: a tiny term, below
        # any non-zero co-view score (cosine >= 1 / max count, times decay ** 19 at least).
        return out + 1e-12 * self.popularity / max(self.popularity.max(), 1.0)

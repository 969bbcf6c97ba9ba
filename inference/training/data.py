"""MovieLens-100k as training examples: past events train, each user's later events evaluate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nrtrec.core.datasets import MovieLens
from nrtrec.inference.text import listing_text


@dataclass(frozen=True)
class Split:
    item_ids: list[str]  # row i of every item matrix is item_ids[i]
    texts: list[str]  # the item tower's input text per row
    train: list[np.ndarray]  # per user: item rows in time order (the past)
    test: list[np.ndarray]  # per user: item rows after the past (the held-out later events)
    train_ts: list[np.ndarray]  # per user: the seconds of ``train``'s events

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def split(data: MovieLens, test_fraction: float = 0.2) -> Split:
    """Each user's events in time order; the last ``test_fraction`` of them (at least one) are
    held out, so every evaluated event lies after everything the model saw of that user."""
    item_ids = sorted(data.movies, key=int)
    row = {item_id: i for i, item_id in enumerate(item_ids)}
    texts = []
    for item_id in item_ids:
        listing = data.movies[item_id].listing(0)
        texts.append(listing_text(listing.title, listing.category, listing.aspects))
    train, test, train_ts = [], [], []
    for user_id in sorted(data.by_user, key=int):
        events = data.by_user[user_id]
        rows = np.array([row[x.item_id] for x in events], np.int32)
        n_test = max(1, round(len(rows) * test_fraction))
        train.append(rows[:-n_test])
        test.append(rows[-n_test:])
        train_ts.append(np.array([x.ts_ms // 1000 for x in events[:-n_test]], np.int64))
    return Split(item_ids, texts, train, test, train_ts)


def histories(sequences: list[np.ndarray], max_history: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``max_history`` rows of each sequence, most recent first, and their mask."""
    rows = np.zeros((len(sequences), max_history), np.int32)
    mask = np.zeros((len(sequences), max_history), np.float32)
    for i, seq in enumerate(sequences):
        recent = seq[::-1][:max_history]
        rows[i, : len(recent)] = recent
        mask[i, : len(recent)] = 1.0
    return rows, mask


def next_item_examples(
    train: list[np.ndarray], max_history: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history rows, mask, target row) for every train event that has a past."""
    prefixes, targets = [], []
    for seq in train:
        for t in range(1, len(seq)):
            prefixes.append(seq[max(0, t - max_history) : t])
            targets.append(seq[t])
    rows, mask = histories(prefixes, max_history)
    return rows, mask, np.array(targets, np.int32)


def target_seconds(train_ts: list[np.ndarray]) -> np.ndarray:
    """The second of each example's target, in :func:`next_item_examples`' order (per user,
    every event but the first): what recency weights are computed from."""
    parts = [ts[1:] for ts in train_ts]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)

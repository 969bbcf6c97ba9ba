"""Offline retrieval metrics on each user's held-out later events, with two baselines.

Every method ranks the whole catalogue for a user, minus the items the user already saw in
the past (the app drops those too). Relevant items are the user's held-out later events.
- ``two_tower``: user tower over the last ``max_history`` past items vs. the item tower.
- ``most_popular``: items by count of past events across all users.
- ``similar_to_last_viewed``: items nearest (item tower, cosine) to the user's last past item,
  the recently-viewed-items approach.
"""

from __future__ import annotations

import numpy as np

from nrtrec.inference.towers import TowerWeights, item_head, normalize, user_tower
from nrtrec.inference.training.data import Split, histories

KS = (10, 50)


def ranking_metrics(scores: np.ndarray, split: Split) -> dict[str, float]:
    """Recall@10, Recall@50 and NDCG@10 averaged over users; ``scores`` is [users, items]."""
    scores = scores.astype(np.float64, copy=True)
    for u, seen in enumerate(split.train):
        scores[u, seen] = -np.inf
    top = np.argsort(-scores, axis=1)[:, : max(KS)]
    recall = {k: [] for k in KS}
    ndcg = []
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for u, relevant_rows in enumerate(split.test):
        relevant = set(relevant_rows.tolist()) - set(split.train[u].tolist())
        if not relevant:
            continue
        hits = np.array([r in relevant for r in top[u]])
        for k in KS:
            recall[k].append(hits[:k].sum() / len(relevant))
        ideal = discounts[: min(len(relevant), 10)].sum()
        ndcg.append((hits[:10] * discounts).sum() / ideal)
    out = {f"recall@{k}": float(np.mean(v)) for k, v in recall.items()}
    out["ndcg@10"] = float(np.mean(ndcg))
    out["users"] = len(ndcg)
    return out


def evaluate(weights: TowerWeights, text: np.ndarray, split: Split) -> dict[str, dict]:
    items = item_head(weights, text)
    rows, mask = histories(split.train, weights.max_history)
    users = user_tower(weights, items[rows] * mask[..., None], mask)

    counts = np.bincount(np.concatenate(split.train), minlength=split.n_items).astype(float)
    popular = np.broadcast_to(counts, (len(split.train), split.n_items))

    last = np.array([seq[-1] for seq in split.train])
    similar = items[last] @ items.T
    text_n = normalize(text)
    similar_text = text_n[last] @ text_n.T

    return {
        "two_tower": ranking_metrics(users @ items.T, split),
        "most_popular": ranking_metrics(popular, split),
        "similar_to_last_viewed": ranking_metrics(similar, split),
        "similar_to_last_viewed_minilm": ranking_metrics(similar_text, split),
    }

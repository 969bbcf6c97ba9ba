"""The serving path's data: a clustered catalogue with titles and attributes, 2 % of it listed
in the last week (through the gateway), users near the items they viewed (into the store), view
counts."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np

from bench.common import unit
from bench.recommender_app.params import (
    CATEGORIES,
    FRESH_SHARE,
    INDEX,
    MODEL_VERSION,
    TOKEN,
    Params,
)
from bench.recommender_app.stack import Stack
from nrtrec.schemas import UserVector
from nrtrec.user_store import UserVectorStore


@dataclass
class Data:
    item_vectors: np.ndarray
    user_ids: list[str]
    user_vectors: np.ndarray
    recent: list[list[str]]


def load_data(p: Params, stack: Stack, store: UserVectorStore) -> Data:
    """Items (cosine, clustered like real embeddings, with titles and attributes) through the
    gateway; users, each near the items they viewed, into the store; view counts."""
    rng = np.random.default_rng(p.seed)
    centres = unit(rng.standard_normal((max(1, p.items // 100), p.dim)))
    which = rng.integers(0, len(centres), p.items)
    items = unit(centres[which] + 0.6 * rng.standard_normal((p.items, p.dim)) / np.sqrt(p.dim))
    # When each item was listed (ms): FRESH_SHARE of them within the last week (fresh to the
    # app), the rest a year ago, so the fresh search has a shop's share of new listings.
    now_ms = time.time_ns() // 1_000_000
    listing_rng = np.random.default_rng(p.seed + 1)  # the other draws stay as they were
    fresh = listing_rng.random(p.items) < FRESH_SHARE
    listed_at = np.where(
        fresh, now_ms - listing_rng.integers(0, 7 * 86_400_000, p.items), now_ms - 365 * 86_400_000
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=stack.gateway.url, headers=auth, trust_env=False, timeout=120) as c:
        spec = {"dim": p.dim, "metric": "cosine", "model_version": MODEL_VERSION}
        c.put(f"/v1/indexes/{INDEX}", json={**spec, "max_elements": p.items}).raise_for_status()
        for lo in range(0, p.items, 1000):
            batch = [
                {
                    "id": str(i),
                    "vector": items[i].tolist(),
                    "attributes": {
                        "title": f"Item {i}",
                        "category": CATEGORIES[i % len(CATEGORIES)],
                        "price": float(5 + i % 95),
                        "year": 1950 + i % 70,
                        "listed_at": int(listed_at[i]),
                    },
                }
                for i in range(lo, min(lo + 1000, p.items))
            ]
            c.post(f"/v1/indexes/{INDEX}/upsert", json={"items": batch}).raise_for_status()
    user_ids = [f"u{i}" for i in range(p.users)]
    recent = [
        [str(i) for i in rng.choice(p.items, p.recent, replace=False)] for _ in range(p.users)
    ]
    user_vectors = unit(
        np.stack([items[[int(i) for i in r]].mean(axis=0) for r in recent])
        + 0.1 * rng.standard_normal((p.users, p.dim))
    )
    now = time.time_ns() // 1_000_000
    for user_id, vector, viewed in zip(user_ids, user_vectors, recent, strict=True):
        store.put(
            UserVector(
                user_id=user_id,
                model_version=MODEL_VERSION,
                vector=vector.tolist(),
                source_ts=now,
                updated_ts=now,
            ),
            recent_items=viewed,
        )
    store.add_views(Counter(i for viewed in recent for i in viewed))
    return Data(items, user_ids, user_vectors, recent)

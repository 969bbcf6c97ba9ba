"""How a personalized list is ranked: search score, popularity prior, fresh-listing boost.

Each candidate's score is its search score (``similarity``) plus, for a user back after a break,
the prior's weight times its prior (:mod:`.prior`), plus the fresh boost for a fresh listing
(:mod:`.fresh`). The candidates are the search's hits, the fresh listings (:mod:`.fresh_pool`:
the boost cannot lift what the search never returned) and, with a prior, the popular pool.
Scores are only added to a similarity (cosine, inner product), never to a distance: the caller
ranks by the search alone then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nrtrec.recommender_app.fresh import FreshBoost
from nrtrec.recommender_app.popular import PoolVectors
from nrtrec.schemas.filters import Filter
from nrtrec.schemas.query_api import SearchHit

Json = dict[str, Any]


@dataclass(frozen=True)
class Prior:
    """The popularity prior of one request: its weight and the pool's vectors and priors."""

    weight: float
    pool: PoolVectors


def _similarities(pool: PoolVectors, user: list[float], metric: str) -> np.ndarray:
    """The pool's search scores for ``user``, as the node computes them (cosine or ip)."""
    query = np.asarray(user, np.float64)
    similarity = pool.float64 @ query
    if metric == "cosine":
        similarity /= np.maximum(pool.norms * np.linalg.norm(query), 1e-12)
    return similarity


def _add_best(
    scored: dict[str, Json],
    pool: PoolVectors,
    most: np.ndarray,
    user: list[float],
    metric: str,
    k: int,
    viewed: set[str],
    filter: Filter,
    extra_of: Callable[[str, Mapping[str, Any] | None], float],
) -> None:
    """The pool's items that can reach the top ``k``, into ``scored`` (left out: the viewed,
    those the filter refuses, those already there).

    Per request only the pool's best by similarity + ``most`` (what the prior and the boost
    can add at most) are looked at, best first, until ``k`` are taken and the next could not
    beat the ``k``-th taken: a loop over every item of a pool of hundreds cost the serving
    path more than the search itself under load."""
    similarity = _similarities(pool, user, metric)
    bound = similarity + most
    taken: list[float] = []  # the taken items' scores (similarity + extra_of)
    for row in np.argsort(-bound, kind="stable"):
        if len(taken) >= k and bound[row] < sorted(taken, reverse=True)[k - 1]:
            break
        item_id, attributes = pool.ids[row], pool.attributes[row]
        if item_id in scored or item_id in viewed or not filter.matches(attributes):
            continue
        scored[item_id] = {
            "id": item_id,
            "similarity": float(similarity[row]),
            "attributes": attributes,
        }
        taken.append(float(similarity[row]) + extra_of(item_id, attributes))


def rank(
    hits: list[SearchHit],
    *,
    user: list[float],
    metric: str,
    prior: Prior | None,
    fresh: FreshBoost,
    fresh_pool: PoolVectors | None = None,
    now_s: float,
    k: int,
    viewed: set[str],
    filter: Filter,
) -> tuple[list[Json], bool]:
    """The top ``k`` candidates by search score + prior + fresh boost, and whether any score
    is more than its search score (the items then carry ``similarity``, and ``fresh`` when
    boosted).

    A pool's item (popular or fresh) the search did not return is scored here with the node's
    similarity; the pools' items that the user viewed or the filter refuses stay out, as the
    search leaves them out. An item in several lists counts once.
    """
    scored: dict[str, Json] = {}
    for h in hits:
        if h.id not in viewed and h.id not in scored:
            scored[h.id] = {"id": h.id, "similarity": h.score, "attributes": h.attributes}
    prior_of: dict[str, float] = {}
    pools: list[tuple[PoolVectors, np.ndarray]] = []  # each pool, and the most it can add
    if fresh_pool is not None and fresh.boost:
        pools.append((fresh_pool, np.full(len(fresh_pool.ids), fresh.boost)))
    if prior is not None:
        extra = prior.weight * prior.pool.priors
        prior_of = dict(zip(prior.pool.ids, extra.tolist(), strict=True))
        pools.append((prior.pool, extra + fresh.boost))

    since_ms = fresh.listed_since_ms(now_s)

    def extra_of(item_id: str, attributes: Mapping[str, Any] | None) -> float:
        return prior_of.get(item_id, 0.0) + fresh.boost_since(attributes, since_ms)

    for pool, most in pools:
        _add_best(scored, pool, most, user, metric, k, viewed, filter, extra_of)
    blended = prior is not None
    for item in scored.values():
        boost = fresh.boost_since(item["attributes"], since_ms)
        item["score"] = item["similarity"] + prior_of.get(item["id"], 0.0) + boost
        if boost:
            item["fresh"] = blended = True
    # Ties in reverse id order, so the order does not depend on which list an item came from.
    ranked = sorted(scored.values(), key=lambda i: (i["score"], i["id"]), reverse=True)[:k]
    out = []
    for item in ranked:
        attributes = item.pop("attributes") or {}
        if not blended:
            del item["similarity"]
        if attributes.get("title") is not None:
            item["title"] = str(attributes["title"])
        out.append(item)
    return out, blended

"""The app's blend of search score, popularity prior and fresh boost (recommender_app/ranking.py),
on hand-made hits: the pure function the personalized route calls (test_app checks it through
real query nodes)."""

from __future__ import annotations

import numpy as np

from nrtrec.recommender_app.fresh import FreshBoost
from nrtrec.recommender_app.popular import PoolVectors
from nrtrec.recommender_app.ranking import Prior, rank
from nrtrec.schemas.filters import Filter, parse_filter
from nrtrec.schemas.query_api import SearchHit

NOW_S = 10_000.0
FRESH = FreshBoost(boost=0.2, fresh_s=100.0)
NEW = NOW_S * 1000 - 50_000  # listed 50 s ago: fresh
OLD = NOW_S * 1000 - 500_000


def hit(item_id: str, score: float, **attributes) -> SearchHit:
    return SearchHit(id=item_id, score=score, attributes={"title": item_id.upper(), **attributes})


NO_FILTER = Filter()


def ranked(hits, prior=None, k=10, viewed=(), filter=NO_FILTER, fresh=FRESH):
    return rank(
        hits, user=[1.0, 0.0], metric="cosine", prior=prior, fresh=fresh, now_s=NOW_S, k=k,
        viewed=set(viewed), filter=filter,
    )  # fmt: skip


def test_without_prior_or_fresh_items_the_search_order_and_scores_stand() -> None:
    items, blended = ranked([hit("a", 0.9, listed_at=OLD), hit("b", 0.8)])
    assert not blended
    assert items == [
        {"id": "a", "score": 0.9, "title": "A"},
        {"id": "b", "score": 0.8, "title": "B"},
    ]


def test_a_fresh_listing_is_boosted_once_and_marked() -> None:
    # "c" came from both searches: counted once. "v" was viewed: out.
    hits = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.75, listed_at=NEW), hit("v", 0.99)]
    items, blended = ranked([*hits, hit("c", 0.75, listed_at=NEW)], k=3, viewed=["v"])
    assert blended
    assert [i["id"] for i in items] == ["c", "a", "b"]
    assert items[0] == {"id": "c", "similarity": 0.75, "score": 0.95, "fresh": True, "title": "C"}
    assert items[1] == {"id": "a", "similarity": 0.9, "score": 0.9, "title": "A"}


def test_prior_and_boost_add_up_and_the_pool_obeys_filter_and_viewed() -> None:
    pool = PoolVectors(
        ids=["p", "q", "v"],
        vectors=np.array([[0.6, 0.8], [1.0, 0.0], [1.0, 0.0]], np.float32),
        priors=np.array([1.0, 0.5, 1.0]),
        attributes=[{"year": 1990, "listed_at": NEW}, {"year": 2000}, {"year": 1990}],
    )
    items, _ = ranked(
        [hit("a", 0.9, year=1990)], prior=Prior(0.5, pool), viewed=["v"],
        filter=parse_filter({"year": {"lt": 1995}}),
    )  # fmt: skip
    # p: cosine 0.6 + 0.5 * 1.0 + 0.2 (fresh); q fails the filter; v was viewed.
    assert [(i["id"], round(i["score"], 6)) for i in items] == [("p", 1.3), ("a", 0.9)]
    assert items[0]["fresh"] is True and abs(items[0]["similarity"] - 0.6) < 1e-6


def test_no_boost_when_switched_off_or_no_time() -> None:
    items, blended = ranked([hit("a", 0.5, listed_at=NEW)], fresh=FreshBoost(0.0, 100.0))
    assert not blended and items[0]["score"] == 0.5
    items, blended = ranked([hit("a", 0.5, listed_at="yesterday"), hit("b", 0.4, listed_at=OLD)])
    assert not blended and [i["score"] for i in items] == [0.5, 0.4]


def test_the_fresh_pool_brings_listings_the_search_missed() -> None:
    pool = PoolVectors(
        ids=["f", "a", "g"],
        vectors=np.array([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]], np.float32),
        priors=np.zeros(3),
        attributes=[{"listed_at": NEW}, {"listed_at": NEW}, {"listed_at": OLD}],
    )
    items, blended = ranked([hit("a", 0.9), hit("b", 0.85)], k=3)
    assert [i["id"] for i in items] == ["a", "b"] and not blended
    items, blended = rank(
        [hit("a", 0.9), hit("b", 0.85)], user=[1.0, 0.0], metric="cosine", prior=None,
        fresh=FRESH, fresh_pool=pool, now_s=NOW_S, k=3, viewed=set(), filter=NO_FILTER,
    )  # fmt: skip
    # f: cosine 0.8 + 0.2; a is the search's hit (its own attributes: not fresh); g: old, 0.0.
    assert blended and [(i["id"], round(i["score"], 6)) for i in items] == [
        ("f", 1.0), ("a", 0.9), ("b", 0.85)
    ]  # fmt: skip
    off = FreshBoost(0.0, 100.0)
    items, _ = rank(
        [hit("a", 0.9)], user=[1.0, 0.0], metric="cosine", prior=None, fresh=off,
        fresh_pool=pool, now_s=NOW_S, k=3, viewed=set(), filter=NO_FILTER,
    )  # fmt: skip
    assert [i["id"] for i in items] == ["a"]  # no boost: the pool is not a candidate source

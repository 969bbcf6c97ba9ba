"""The recommender app's HTTP API against real services: a Redis store, two query-node
shards behind a gateway (processes), the app in-process (TestClient, lifespan included)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nrtrec.recommender_app import create_app
from tests.recommender_app.cluster import CATEGORIES, delete_items, put_user, upsert_items
from tests.waiting import poll, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings, store):
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "Traceback" not in body["detail"]
    return body["detail"]


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


def wait_popular(client: TestClient, expected: list[str], timeout_s: float = 5.0) -> dict:
    """Popular items are refreshed in the background (0.2 s in these tests)."""
    answers: list[dict] = []

    def popular() -> bool:
        answers.append(client.get("/v1/users/nobody/recommendations?k=3").json())
        return ids(answers[-1]) == expected

    poll(popular, timeout_s, interval_s=0.1)
    return answers[-1]


def test_personalized_with_the_users_newest_version(client, store, catalogue):
    query = catalogue.vectors[2][10] + 0.1
    recent = ["11", "5"]
    put_user(store, "u-new", {1: catalogue.vectors[1][0], 2: query}, recent=recent)
    r = client.get("/v1/users/u-new/recommendations?k=10")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "personalized" and body["model_version"] == 2
    assert body["degraded"] is False and body["reasons"] == []
    # Exactly the nearest items at version 2, less what the user viewed.
    assert ids(body) == catalogue.exact(2, query, 10, keep=lambda i: i not in recent)
    assert all(item["title"] == f"Film {item['id']}" for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # A click just now: within the session, no popularity prior.
    assert body["popularity_prior"] == 0.0 and "similarity" not in body["items"][0]
    # Where the time went, per request.
    timing = r.headers["Server-Timing"]
    assert re.fullmatch(
        r"store;dur=[\d.]+, search;dur=[\d.]+, app;dur=[\d.]+, total;dur=[\d.]+", timing
    ), timing
    assert client.get("/v1/users/u-new/recommendations").json()["items"].__len__() == 10


def test_a_returning_user_gets_the_popularity_prior(client, store, catalogue, settings):
    """Newest click two hours ago (past the session gap): the list is the hits and the popular
    pool ranked by cosine + weight * prior, the prior log(1 + 10 v / max v) / log(11) of the
    item's views (0 outside the pool); each item says its cosine."""
    weight = settings.app.popularity_prior
    assert weight > 0 and settings.app.session_gap_s < 7200
    version_ids = catalogue.version_ids(2)
    store.add_views({version_ids[40]: 5_000, version_ids[41]: 2_000, version_ids[42]: 500})
    query = catalogue.vectors[2][60]
    recent = [version_ids[42]]
    put_user(store, "u-back", {2: query}, recent=recent, clicked_s_ago=7200)
    k = 8

    def expected() -> list[str]:
        views = dict(store.popular(settings.app.popular_pool))
        top = max(views.values())
        ids_ = [i for i in version_ids if i not in recent]
        rows = [catalogue.ids.index(i) for i in ids_]
        matrix = catalogue.vectors[2][rows]
        cos = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        prior = np.array([np.log1p(10 * views.get(i, 0) / top) / np.log1p(10) for i in ids_])
        order = np.argsort(-(cos + weight * prior), kind="stable")
        return [ids_[r] for r in order[:k]]

    answers: list[dict] = []

    def blended() -> bool:
        answers.append(client.get(f"/v1/users/u-back/recommendations?k={k}").json())
        return ids(answers[-1]) == expected()

    wait_until(
        "the answer ranked by cosine + prior",
        blended,
        10.0,
        interval_s=0.2,
        diagnose=lambda: f"expected {expected()}\nlast answer {answers[-1]}",
    )
    body = answers[-1]
    assert body["source"] == "personalized" and body["popularity_prior"] == weight
    assert ids(body)[:2] == [version_ids[40], version_ids[41]]  # the viewed one stays out
    for item in body["items"]:
        row = catalogue.ids.index(item["id"])
        v = catalogue.vectors[2][row]
        cosine = float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query)))
        assert abs(item["similarity"] - cosine) <= 1e-4, item
        assert item["score"] >= item["similarity"]
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # The same user back within the session gap: the search's own ranking.
    put_user(store, "u-back", {2: query}, recent=recent)
    body = client.get(f"/v1/users/u-back/recommendations?k={k}").json()
    assert body["popularity_prior"] == 0.0
    assert ids(body) == catalogue.exact(2, query, k, keep=lambda i: i not in recent)


def _with_cosine(query: np.ndarray, cosine: float, seed: int) -> list[float]:
    """A vector whose cosine to ``query`` is ``cosine``."""
    q = query / np.linalg.norm(query)
    r = np.random.default_rng(seed).standard_normal(len(q))
    r -= (r @ q) * q
    return (cosine * q + np.sqrt(1 - cosine**2) * r / np.linalg.norm(r)).tolist()


def test_a_fresh_listing_gets_the_boost(client, store, catalogue, settings, cluster):
    """A listing listed just now whose cosine is just below the k-th hit's: the search alone
    never returns it, the app's fresh pool (refreshed in the background) has it, and its cosine
    + app.fresh_boost puts it in the list, marked fresh. The same cosine listed long ago (or
    with no listed_at) stays out; once deleted it leaves the list with the next refresh."""
    boost, fresh_s = settings.app.fresh_boost, settings.app.fresh_listing_s
    assert boost > 0
    query = catalogue.vectors[2][70].astype(np.float64)
    k, user = 5, "u-fresh"
    put_user(store, user, {2: query}, recent=[])

    def cosine_of(item_id: str) -> float:
        v = catalogue.vectors[2][catalogue.ids.index(item_id)]
        return float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query)))

    kth = catalogue.exact(2, query, k)[-1]
    cosine = cosine_of(kth) - boost / 2  # below the k-th; above it with the boost
    now_ms = time.time_ns() // 1_000_000
    listed_at = {"fresh-new": now_ms - 60_000, "fresh-old": now_ms - int(2 * fresh_s * 1000)}
    items = [
        {"id": i, "vector": _with_cosine(query, cosine - 0.001 * n, n),
         "attributes": {"title": i, "listed_at": at}}
        for n, (i, at) in enumerate(listed_at.items())
    ]  # fmt: skip
    items.append({"id": "fresh-none", "vector": _with_cosine(query, cosine, 9), "attributes": {}})
    upsert_items(cluster.gateway.url, 2, items)
    answers: list[dict] = []

    def listed(present: bool) -> bool:
        answers.append(client.get(f"/v1/users/{user}/recommendations?k={k}").json())
        return ("fresh-new" in ids(answers[-1])) == present

    try:
        wait_until(
            "the fresh listing in the list", lambda: listed(True), 10.0, interval_s=0.1,
            diagnose=lambda: f"last answer {answers[-1]}",
        )  # fmt: skip
        body = answers[-1]
        assert body["source"] == "personalized" and body["fresh_boost"] == boost, body
        # The catalogue's top k by cosine and the fresh one by cosine + boost: it displaces the
        # k-th at least.
        scores = {i: cosine_of(i) for i in catalogue.exact(2, query, k)}
        scores["fresh-new"] = cosine + boost
        expected = sorted(scores, key=lambda i: -scores[i])[:k]
        assert ids(body) == expected and expected[-1] != kth, body
        (fresh,) = [item for item in body["items"] if item.get("fresh")]
        assert fresh["id"] == "fresh-new" and abs(fresh["similarity"] - cosine) <= 1e-4
        assert abs(fresh["score"] - (fresh["similarity"] + boost)) <= 1e-9
        assert all(
            i.get("fresh") is None and i["score"] == i["similarity"]
            for i in body["items"]
            if i["id"] != "fresh-new"
        )
        # A filter the fresh listing fails keeps it out, as it keeps it out of the search.
        body = client.get(f"/v1/users/{user}/recommendations?k={k}&year.gte=1900").json()
        assert "fresh-new" not in ids(body) and body["fresh_boost"] == 0.0
    finally:
        delete_items(cluster.gateway.url, 2, [*listed_at, "fresh-none"])
    wait_until(
        "the deleted fresh listing out of the list", lambda: listed(False), 10.0, interval_s=0.1,
        diagnose=lambda: f"last answer {answers[-1]}",
    )  # fmt: skip
    assert answers[-1]["fresh_boost"] == 0.0 and ids(answers[-1]) == catalogue.exact(2, query, k)


def test_the_fresh_pool_keeps_the_newest_when_more_are_fresh(store, catalogue, settings, cluster):
    """app.fresh_pool 2 and three fresh listings: the pool narrows its window until the two
    newest fit, and only they get into the list."""
    settings = settings.model_copy(
        update={"app": settings.app.model_copy(update={"fresh_pool": 2})}
    )
    boost = settings.app.fresh_boost
    query = catalogue.vectors[2][80].astype(np.float64)
    k, user = 6, "u-fresh-pool"
    put_user(store, user, {2: query}, recent=[])
    kth = catalogue.exact(2, query, k)[-1]
    v = catalogue.vectors[2][catalogue.ids.index(kth)]
    cosine = float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query))) - boost / 2
    now_ms = time.time_ns() // 1_000_000
    ages_s = {"pool-10s": 10, "pool-1000s": 1_000, "pool-1d": 100_000}
    upsert_items(cluster.gateway.url, 2, [
        {"id": i, "vector": _with_cosine(query, cosine, n),
         "attributes": {"title": i, "listed_at": now_ms - age * 1000}}
        for n, (i, age) in enumerate(ages_s.items())
    ])  # fmt: skip
    answers: list[dict] = []

    def newest_two() -> bool:
        answers.append(client.get(f"/v1/users/{user}/recommendations?k={k}").json())
        return {"pool-10s", "pool-1000s"} <= set(ids(answers[-1]))

    try:
        with TestClient(create_app(settings, store=store)) as client:
            wait_until(
                "the two newest fresh listings in the list", newest_two, 10.0, interval_s=0.1,
                diagnose=lambda: f"last answer {answers[-1]}",
            )  # fmt: skip
            assert "pool-1d" not in ids(answers[-1]), answers[-1]
    finally:
        delete_items(cluster.gateway.url, 2, list(ages_s))


def test_a_version_without_index_falls_back_to_the_next_older(client, store, catalogue):
    # Version 3 is the user's newest, but no index of version 3 is live: never matched with v2's
    # index; the user's own v2 vector is.
    put_user(store, "u-v3", {2: catalogue.vectors[2][20], 3: np.ones(8)})
    body = client.get("/v1/users/u-v3/recommendations?k=5").json()
    assert body["source"] == "older-version" and body["model_version"] == 2
    assert ids(body) == catalogue.exact(2, catalogue.vectors[2][20], 5)
    assert body["degraded"] is False


def test_no_version_with_an_index_gives_popular_items(client, store, catalogue):
    store.add_views({"7": 30, "8": 20, "9": 10, "10": 5})
    put_user(store, "u-only-v3", {3: np.ones(8)}, recent=["8"])
    wait_popular(client, ["7", "8", "9"])
    body = client.get("/v1/users/u-only-v3/recommendations?k=3").json()
    # The viewed item is left out here too.
    assert body["source"] == "popular" and body["model_version"] is None
    assert ids(body) == ["7", "9", "10"] and body["degraded"] is False
    assert [item["score"] for item in body["items"]] == [30.0, 10.0, 5.0]
    assert body["items"][0]["title"] == "Film 7"


def test_an_unknown_user_gets_popular_items(client, store):
    store.add_views({"42": 3, "43": 9})
    body = wait_popular(client, ["43", "42"])
    assert body["source"] == "popular" and ids(body) == ["43", "42"]
    assert body["degraded"] is False and body["reasons"] == []


def test_attribute_filters(client, store, catalogue):
    query = catalogue.vectors[2][3]
    put_user(store, "u-filter", {2: query})
    attrs = catalogue.attributes

    def check(params: str, keep) -> list[str]:
        r = client.get(f"/v1/users/u-filter/recommendations?k=6&{params}")
        assert r.status_code == 200, r.text
        got = ids(r.json())
        assert got == catalogue.exact(2, query, 6, keep=keep), params
        return got

    check("category=Comedy", lambda i: attrs[i]["category"] == "Comedy")
    check("category=Comedy&category=Drama", lambda i: attrs[i]["category"] in ("Comedy", "Drama"))
    check("location.in=US,DE", lambda i: attrs[i]["location"] in ("US", "DE"))
    check("category.ne=Horror", lambda i: attrs[i]["category"] != "Horror")
    check("price.gte=10&price.lt=20", lambda i: 10 <= attrs[i]["price"] < 20)
    check(
        "year=1995&category=Drama",
        lambda i: attrs[i]["year"] == 1995 and attrs[i]["category"] == "Drama",
    )
    # Popular items are filtered the same way.
    store.add_views({str(i): 100 - i for i in range(1, 9)})
    wait_popular(client, ["1", "2", "3"])
    body = client.get(f"/v1/users/nobody/recommendations?k=3&category={CATEGORIES[1]}").json()
    assert body["source"] == "popular"
    assert (
        ids(body) == [i for i in map(str, range(1, 9)) if attrs[i]["category"] == CATEGORIES[1]][:3]
    )


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        ("color=red", "invalid_filter", "unknown filter 'color'"),
        ("price.between=1", "invalid_filter", "unknown operator 'between'"),
        ("price.lt=cheap", "invalid_filter", "'cheap' is not a number"),
        ("price.lt=nan", "invalid_filter", "not a finite number"),
        ("category.gt=A", "invalid_filter", "needs a number attribute"),
        ("price.lt=1&price.lt=2", "invalid_filter", "given twice"),
        ("category=", "invalid_filter", "empty value"),
        ("category=A&category.ne=B", "invalid_filter", "not both"),
        ("k=0", "invalid_parameter", "between 1 and 100"),
        ("k=101", "invalid_parameter", "between 1 and 100"),
        ("k=ten", "invalid_parameter", "must be an integer"),
        ("k=+5", "invalid_parameter", "must be an integer"),
        ("k=%205", "invalid_parameter", "must be an integer"),
        ("k=5.0", "invalid_parameter", "must be an integer"),
        ("location.in=" + ",".join(f"L{i}" for i in range(300)), "invalid_filter", "at most 256"),
    ],
)
def test_bad_query_parameters_are_400(client, query, code, says):
    for path in ("/v1/users/u1/recommendations", "/v1/items/1/similar"):
        assert says in error(client.get(f"{path}?{query}"), 400, code)


def test_bad_ids_are_4xx(client):
    error(client.get("/v1/users/%20u1/recommendations"), 422, "invalid_request")
    error(client.get("/v1/users/" + "x" * 300 + "/recommendations"), 422, "invalid_request")
    error(client.get("/v1/items/x%20/similar"), 422, "invalid_request")
    error(client.get("/v1/nothing"), 404, "not_found")
    error(client.post("/v1/users/u1/recommendations"), 405, "method_not_allowed")


def test_similar_items(client, catalogue):
    r = client.get("/v1/items/12/similar?k=5")
    assert r.status_code == 200, r.text
    body = r.json()
    row = catalogue.ids.index("12")
    expected = catalogue.exact(2, catalogue.vectors[2][row], 6)
    assert expected[0] == "12"
    assert body["source"] == "personalized" and body["model_version"] == 2
    assert ids(body) == expected[1:] and "Server-Timing" in r.headers
    # With a filter, still without the item itself.
    body = client.get("/v1/items/12/similar?k=3&category=Action").json()
    attrs = catalogue.attributes
    keep = lambda i: attrs[i]["category"] == "Action" and i != "12"  # noqa: E731
    assert ids(body) == catalogue.exact(2, catalogue.vectors[2][row], 3, keep=keep)


def test_similar_items_of_an_item_only_in_an_older_version(client, catalogue):
    item = catalogue.only_v1[0]
    body = client.get(f"/v1/items/{item}/similar?k=4").json()
    assert body["source"] == "older-version" and body["model_version"] == 1
    row = catalogue.ids.index(item)
    assert ids(body) == catalogue.exact(1, catalogue.vectors[1][row], 5)[1:]


def test_similar_items_of_an_unknown_item_are_popular(client, store):
    store.add_views({"3": 5, "no-such-item": 9})
    wait_popular(client, ["no-such-item", "3"])
    body = client.get("/v1/items/no-such-item/similar?k=3").json()
    assert body["source"] == "popular" and ids(body) == ["3"]


def test_recent_views_with_titles(client, store, catalogue):
    put_user(store, "u-recent", {2: catalogue.vectors[2][1]}, recent=["4", "2", "no-such"])
    r = client.get("/v1/users/u-recent/recent-views")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "items": [
            {"id": "4", "title": "Film 4"},
            {"id": "2", "title": "Film 2"},
            {"id": "no-such", "title": None},
        ],
        "degraded": False,
        "reasons": [],
    }
    assert client.get("/v1/users/nobody/recent-views").json()["items"] == []


def test_homepage_renders_recent_views_and_recommendations(client, store, catalogue):
    put_user(store, "u-page", {2: catalogue.vectors[2][30]}, recent=["31"])
    r = client.get("/?user=u-page")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "Based on your recent views" in html and 'data-user="u-page"' in html
    assert 'id="recent-list"' in html and "Film 31" in html
    expected = catalogue.exact(2, catalogue.vectors[2][30], 10, keep=lambda i: i != "31")
    assert re.findall(r'<li class="item" data-item-id="([^"]+)">\s*<button', html) == expected
    assert client.get("/static/home.js").status_code == 200
    # No user: a form; a bad one: a 422 like the API's.
    assert 'name="user"' in client.get("/").text
    error(client.get("/?user=%20x"), 422, "invalid_request")


def test_a_title_is_escaped_on_the_page(client, store, settings):
    # A seller's title never becomes markup (autoescaping): checked on the recent-views list.
    import httpx

    from tests.recommender_app.cluster import AUTH, DIM

    evil = "<script>alert(1)</script>"
    item = {"id": "evil", "vector": [1.0] * DIM, "attributes": {"title": evil}}
    r = httpx.post(
        f"{settings.gateway.url}/v1/indexes/items/upsert",
        json={"items": [item], "model_version": 2},
        headers=AUTH,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    put_user(store, "u-evil", {2: [1.0] * DIM}, recent=["evil"])
    html = client.get("/?user=u-evil").text
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_healthz_and_metrics(client, store, catalogue):
    put_user(store, "u-metrics", {2: catalogue.vectors[2][0]})
    client.get("/v1/users/u-metrics/recommendations")
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["live_versions"] == [1, 2]
    text = client.get("/metrics").text
    assert (
        'nrtrec_app_answers_total{endpoint="recommendations",model_version="2",'
        'source="personalized"} 1.0'
    ) in text
    # put_user stamps the vector now: under a second old when it served.
    assert 'nrtrec_app_user_vector_age_seconds_bucket{le="1.0",model_version="2"} 1.0' in text
    # The best hit is the item the user's vector copies: a cosine of 1 (give or take a float).
    assert (
        'nrtrec_app_top_score_bucket{endpoint="recommendations",le="0.9",model_version="2"} 0.0'
    ) in text
    assert (
        'nrtrec_app_top_score_bucket{endpoint="recommendations",le="+Inf",model_version="2"} 1.0'
    ) in text
    assert 'nrtrec_app_stage_seconds_count{endpoint="recommendations",stage="store"}' in text
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in text

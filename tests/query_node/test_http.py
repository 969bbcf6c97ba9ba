"""The HTTP API of DESIGN.md, through FastAPI's TestClient (lifespan included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nrtrec.ann import IndexBusy, IndexSpec
from nrtrec.query_node import IndexRegistry, create_app
from nrtrec.query_node.http import indexes
from nrtrec.query_node.node import QueryNode
from tests.fuzzing import refuse_generated_bad_input
from tests.query_node.helpers import node_settings

TOKEN = {"Authorization": "Bearer test-token"}
ITEMS = [
    {"id": "car", "vector": [1, 0, 0], "attributes": {"category": "toys", "price": 12}},
    {"id": "doll", "vector": [0.9, 0.1, 0], "attributes": {"category": "toys", "price": 40}},
    {"id": "lamp", "vector": [0, 1, 0], "attributes": {"category": "home", "price": 30}},
]


@pytest.fixture
def settings(tmp_path):
    return node_settings(tmp_path)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def items(client):
    """An ``items`` index, version 1, cosine, with three items."""
    spec = {"dim": 3, "metric": "cosine", "model_version": 1}
    assert client.put("/v1/indexes/items", json=spec, headers=TOKEN).status_code == 201
    r = client.post("/v1/indexes/items/upsert", json={"items": ITEMS}, headers=TOKEN)
    assert r.status_code == 200, r.text
    return client


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "Traceback" not in body["detail"]
    return body["detail"]


def test_healthz_and_metrics(items):
    assert items.get("/healthz").json() == {"status": "ok", "indexes": 1, "offsets": {}}
    items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1})
    text = items.get("/metrics").text
    assert 'nrtrec_query_node_index_items{index="items",model_version="1"} 3.0' in text
    assert (
        'nrtrec_query_node_request_seconds_count{method="POST",'
        'route="/v1/indexes/{name}/search",status="200"} 1.0'
    ) in text
    assert 'nrtrec_query_node_searches_total{index="items",strategy="exact"} 1.0' in text
    assert 'nrtrec_query_node_gc_pause_seconds_count{generation="0"}' in text


def test_create_list_and_recreate(items):
    [listed] = items.get("/v1/indexes").json()
    assert listed == {
        "name": "items",
        "model_version": 1,
        "dim": 3,
        "metric": "cosine",
        "count": 3,
        "serving": True,
        "backend": "hnsw",
        "quantization": "none",
        "memory": {
            "graph_vector_bytes": 12.0,  # hnswlib's own float32 copy
            # M=16: 2M links and a count at level 0 (132), upper levels (68 / 15), label and
            # pointer (16).
            "graph_link_bytes": pytest.approx(152.53, abs=0.01),
            "full_precision_bytes": 12.0,
            "total_bytes": pytest.approx(176.53, abs=0.01),
        },
    }
    same = {"dim": 3, "metric": "cosine", "model_version": 1}
    assert items.put("/v1/indexes/items", json=same, headers=TOKEN).status_code == 200
    other = {"dim": 4, "metric": "cosine", "model_version": 1}
    detail = error(items.put("/v1/indexes/items", json=other, headers=TOKEN), 409, "index_exists")
    assert "dim 3 (asked 4)" in detail
    faiss = {**same, "backend": "faiss"}
    detail = error(items.put("/v1/indexes/items", json=faiss, headers=TOKEN), 409, "index_exists")
    assert "backend hnsw (asked faiss)" in detail
    int8 = {**same, "model_version": 7, "quantization": "int8"}
    detail = error(items.put("/v1/indexes/items", json=int8, headers=TOKEN), 422, "invalid_spec")
    assert "int8 needs backend faiss" in detail
    v2 = {"dim": 4, "metric": "l2", "model_version": 2, "M": 8, "ef_construction": 50}
    r = items.put("/v1/indexes/items", json=v2, headers=TOKEN)
    assert r.status_code == 201 and r.json()["count"] == 0
    assert [i["model_version"] for i in items.get("/v1/indexes").json()] == [1, 2]


def test_search_defaults_to_the_newest_version(items):
    r = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 2})
    assert r.json()["model_version"] == 1
    assert [i["id"] for i in r.json()["items"]] == ["car", "doll"]
    assert r.json()["items"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    v2 = {"dim": 2, "metric": "l2", "model_version": 2}
    items.put("/v1/indexes/items", json=v2, headers=TOKEN)
    items.post(
        "/v1/indexes/items/upsert",
        json={"items": [{"id": "x", "vector": [3, 4]}], "model_version": 2},
        headers=TOKEN,
    )
    r = items.post("/v1/indexes/items/search", json={"vector": [0, 0], "k": 5})
    assert r.json() == {"items": [{"id": "x", "score": 5.0}], "model_version": 2}
    r = items.post(
        "/v1/indexes/items/search", json={"vector": [0, 1, 0], "k": 1, "model_version": 1}
    )
    assert r.json() == {"items": [{"id": "lamp", "score": pytest.approx(1.0)}], "model_version": 1}


def test_filtered_search(items):
    def ids(f):
        r = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 3, "filter": f})
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert ids({"category": "toys"}) == ["car", "doll"]
    assert ids({"category": {"in": ["home"]}}) == ["lamp"]
    assert ids({"price": {"gte": 20, "lt": 50}}) == ["doll", "lamp"]
    assert ids({"category": "garden"}) == []
    detail = error(
        items.post(
            "/v1/indexes/items/search",
            json={"vector": [1, 0, 0], "filter": {"price": {"between": [1, 2]}}},
        ),
        422,
        "invalid_filter",
    )
    assert "unknown operator 'between'" in detail


def test_search_can_include_attributes(items):
    body = {"vector": [1, 0, 0], "k": 2, "include_attributes": True}
    r = items.post("/v1/indexes/items/search", json=body)
    assert r.status_code == 200, r.text
    assert [(i["id"], i["attributes"]) for i in r.json()["items"]] == [
        ("car", {"category": "toys", "price": 12}),
        ("doll", {"category": "toys", "price": 40}),
    ]
    # Filtered and exact searches carry them too; without the flag the hits stay {id, score}.
    body |= {"filter": {"category": "home"}}
    r = items.post("/v1/indexes/items/search", json=body)
    assert r.json()["items"][0]["attributes"] == {"category": "home", "price": 30}
    r = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1})
    assert set(r.json()["items"][0]) == {"id", "score"}


def test_items_look_up_stored_vectors_and_attributes(items):
    r = items.post("/v1/indexes/items/items", json={"ids": ["lamp", "nope", "car", "lamp"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == 1
    # In the order asked, each once; unknown ids are simply absent; cosine vectors are unit.
    assert [i["id"] for i in body["items"]] == ["lamp", "car"]
    assert body["items"][0] == {
        "id": "lamp",
        "vector": [0.0, 1.0, 0.0],
        "attributes": {"category": "home", "price": 30},
    }
    v2 = {"dim": 2, "metric": "l2", "model_version": 2}
    items.put("/v1/indexes/items", json=v2, headers=TOKEN)
    items.post(
        "/v1/indexes/items/upsert",
        json={"items": [{"id": "car", "vector": [3, 4]}], "model_version": 2},
        headers=TOKEN,
    )
    # Without a version, the newest; with one, that one. A look-up needs no token.
    r = items.post("/v1/indexes/items/items", json={"ids": ["car", "lamp"]})
    assert r.json() == {
        "items": [{"id": "car", "vector": [3.0, 4.0], "attributes": {}}],
        "model_version": 2,
    }
    r = items.post("/v1/indexes/items/items", json={"ids": ["car"], "model_version": 1})
    assert r.json()["items"][0]["vector"] == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ids": []}, 422, "invalid_request"),
        ({"ids": [" x"]}, 422, "invalid_request"),
        ({"ids": ["car"], "model_version": 9}, 404, "index_not_found"),
        ({"ids": ["car"], "extra": 1}, 422, "invalid_request"),
    ],
)
def test_bad_item_look_ups_get_4xx(items, body, status, code):
    error(items.post("/v1/indexes/items/items", json=body), status, code)


def test_upsert_replaces_and_delete_removes(items):
    moved = {"items": [{"id": "lamp", "vector": [0, 0, 2]}]}
    r = items.post("/v1/indexes/items/upsert", json=moved, headers=TOKEN)
    assert r.json() == {"model_version": 1, "applied": 1, "count": 3}
    top = items.post("/v1/indexes/items/search", json={"vector": [0, 0.1, 1], "k": 1}).json()
    assert top["items"][0]["id"] == "lamp"
    r = items.post("/v1/indexes/items/delete", json={"ids": ["lamp", "ghost"]}, headers=TOKEN)
    assert r.json() == {"model_version": 1, "applied": 1, "count": 2}
    top = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 5}).json()
    assert [i["id"] for i in top["items"]] == ["car", "doll"]


def test_snapshot_and_restart_keep_the_indexes(settings):
    with TestClient(create_app(settings)) as client:
        spec = {"dim": 3, "metric": "cosine", "model_version": 1}
        client.put("/v1/indexes/items", json=spec, headers=TOKEN)
        client.post("/v1/indexes/items/upsert", json={"items": ITEMS}, headers=TOKEN)
        r = client.post("/v1/indexes/items/snapshot", headers=TOKEN)
        assert r.status_code == 200
        [snap] = r.json()["snapshots"]
        assert (snap["name"], snap["model_version"], snap["count"]) == ("items", 1, 3)
        client.post("/v1/indexes/items/delete", json={"ids": ["car"]}, headers=TOKEN)
    # The lifespan saved the delete at shutdown; a new app loads the newest snapshot.
    with TestClient(create_app(settings)) as again:
        assert again.get("/v1/indexes").json()[0]["count"] == 2
        r = again.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1})
        assert r.json()["items"][0]["id"] == "doll"


def test_a_version_keeps_its_serving_state_across_restarts(settings):
    """A rollout's building version restarted from its snapshot is still building (a node that
    cannot read its declarations at start must not serve it half-filled); so is one held back."""

    def states(client) -> dict[int, bool]:
        return {i["model_version"]: i["serving"] for i in client.get("/v1/indexes").json()}

    with TestClient(create_app(settings)) as client:
        for version, serving in ((1, True), (2, False)):
            spec = {"dim": 3, "metric": "cosine", "model_version": version, "serving": serving}
            assert client.put("/v1/indexes/items", json=spec, headers=TOKEN).status_code == 201
        body = {"items": ITEMS, "model_version": 2}
        assert client.post("/v1/indexes/items/upsert", json=body, headers=TOKEN).status_code == 200
        assert client.post("/v1/indexes/items/snapshot", headers=TOKEN).status_code == 200
    with TestClient(create_app(settings)) as client:
        assert states(client) == {1: True, 2: False}
        r = client.post("/v1/indexes/items/promote", json={"model_version": 2}, headers=TOKEN)
        assert r.status_code == 200 and r.json()["serving"] is True
        r = client.post("/v1/indexes/items/hold-back", json={"model_version": 1}, headers=TOKEN)
        assert r.status_code == 200 and r.json()["serving"] is False
        r = client.post("/v1/indexes/items/hold-back", json={"model_version": 1})
        assert r.status_code == 401
        # No snapshot asked for: the state changed, so the one taken at shutdown records it.
    with TestClient(create_app(settings)) as client:
        assert states(client) == {1: False, 2: True}


def test_a_faiss_int8_index_over_http_filters_natively_and_survives_a_restart(settings):
    rng = np.random.default_rng(31)
    vectors = rng.standard_normal((1500, 16)).astype(np.float32)
    items = [
        {"id": f"i{i}", "vector": v.tolist(), "attributes": {"shelf": i % 10}}
        for i, v in enumerate(vectors)
    ]
    spec = {"dim": 16, "metric": "l2", "model_version": 1, "backend": "faiss"}
    spec["quantization"] = "int8"
    query = {"vector": vectors[0].tolist(), "k": 5, "filter": {"shelf": 0}}
    with TestClient(create_app(settings)) as client:
        assert client.put("/v1/indexes/vec", json=spec, headers=TOKEN).status_code == 201
        r = client.post("/v1/indexes/vec/upsert", json={"items": items}, headers=TOKEN)
        assert r.status_code == 200, r.text
        [listed] = client.get("/v1/indexes").json()
        assert (listed["backend"], listed["quantization"]) == ("faiss", "int8")
        # One byte per dimension in the graph; the float32 copy beside it rescores.
        assert listed["memory"]["graph_vector_bytes"] == 16
        assert listed["memory"]["full_precision_bytes"] == 64
        answer = client.post("/v1/indexes/vec/search", json=query).json()
        assert answer["items"][0] == {"id": "i0", "score": 0.0}
        assert all(int(hit["id"][1:]) % 10 == 0 for hit in answer["items"])
    with TestClient(create_app(settings)) as again:
        [listed] = again.get("/v1/indexes").json()
        assert (listed["backend"], listed["count"]) == ("faiss", 1500)
        assert again.post("/v1/indexes/vec/search", json=query).json() == answer


def test_drop_one_version_or_all(items):
    items.put(
        "/v1/indexes/items", json={"dim": 3, "metric": "l2", "model_version": 2}, headers=TOKEN
    )
    r = items.delete("/v1/indexes/items", params={"model_version": 1}, headers=TOKEN)
    assert r.json() == {"dropped": [{"name": "items", "model_version": 1}]}
    assert items.delete("/v1/indexes/items", headers=TOKEN).json()["dropped"] == [
        {"name": "items", "model_version": 2}
    ]
    error(items.delete("/v1/indexes/items", headers=TOKEN), 404, "index_not_found")
    assert items.get("/v1/indexes").json() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/indexes/items", {"dim": 3, "metric": "l2", "model_version": 9}),
        ("DELETE", "/v1/indexes/items", None),
        ("POST", "/v1/indexes/items/upsert", {"items": ITEMS}),
        ("POST", "/v1/indexes/items/delete", {"ids": ["car"]}),
        ("POST", "/v1/indexes/items/snapshot", None),
    ],
)
def test_writes_need_the_token(items, method, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}):
        r = items.request(method, path, json=body, headers=headers)
        error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert items.get("/v1/indexes").json()[0]["count"] == 3


def test_without_a_token_configured_the_api_is_open(tmp_path):
    with TestClient(create_app(node_settings(tmp_path, token=None))) as client:
        spec = {"dim": 2, "metric": "ip", "model_version": 1}
        assert client.put("/v1/indexes/open", json=spec).status_code == 201


def test_a_shared_registry_is_served(settings):
    registry = IndexRegistry(settings.query_node)
    registry.create(IndexSpec("x", 1, 2, "l2"))
    with TestClient(create_app(settings, registry)) as client:
        assert client.get("/v1/indexes").json()[0]["name"] == "x"


def search(client, body, raw: str | None = None):
    if raw is not None:
        headers = {"content-type": "application/json"}
        return client.post("/v1/indexes/items/search", content=raw, headers=headers)
    return client.post("/v1/indexes/items/search", json=body)


@pytest.mark.parametrize(
    ("body", "raw", "status", "code", "says"),
    [
        ({"vector": [1, 0], "k": 1}, None, 422, "invalid_vector", "dimension 3"),
        (None, '{"vector": [NaN, 0, 0], "k": 1}', 422, "invalid_request", "vector.0"),
        (None, '{"vector": [1, Infinity, 0]}', 422, "invalid_request", "finite number"),
        (None, '{"vector": [1, 0, 0], ', 422, "invalid_request", "JSON"),
        ({"vector": [1, 0, 0], "k": 0}, None, 400, "out_of_range", "k must be between 1"),
        ({"vector": [1, 0, 0], "k": 1001}, None, 400, "out_of_range", "k must be between 1"),
        ({"vector": [1, 0, 0], "ef": 10**6}, None, 400, "out_of_range", "ef must be"),
        # k and ef are JSON integers: not a string, a float or a boolean read as one.
        (None, '{"vector": [1, 0, 0], "k": "10"}', 422, "invalid_request", "k: Input should be"),
        (None, '{"vector": [1, 0, 0], "k": 10.0}', 422, "invalid_request", "k: Input should be"),
        (None, '{"vector": [1, 0, 0], "k": true}', 422, "invalid_request", "k: Input should be"),
        (None, '{"vector": [1, 0, 0], "ef": "64"}', 422, "invalid_request", "ef: Input should"),
        (
            {"vector": [1, 0, 0], "filter": {f"a{i}": 1 for i in range(33)}},
            None,
            422,
            "invalid_filter",
            "at most 32",
        ),
        (
            {"vector": [1, 0, 0], "filter": {"a": {"in": list(range(257))}}},
            None,
            422,
            "invalid_filter",
            "at most 256",
        ),
        (
            {"vector": [1, 0, 0], "filter": {"a": {"eq": {"nested": 1}}}},
            None,
            422,
            "invalid_filter",
            "got an object",
        ),
        ({"vector": [0, 0, 0]}, None, 422, "invalid_vector", "cosine needs a direction"),
        ({"vector": [1, 0, 0], "model_version": 7}, None, 404, "index_not_found", "version 7"),
        ({"vector": [1, 0, 0], "colour": "red"}, None, 422, "invalid_request", "colour"),
        ({"k": 3}, None, 422, "invalid_request", "vector: Field required"),
    ],
)
def test_bad_searches_get_4xx_with_error_and_detail(items, body, raw, status, code, says):
    assert says in error(search(items, body, raw), status, code)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "says"),
    [
        ("POST", "/v1/indexes/nope/search", {"vector": [1]}, 404, "index_not_found", "'nope'"),
        ("POST", "/v1/indexes/nope/upsert", {"items": ITEMS}, 404, "index_not_found", "'nope'"),
        ("POST", "/v1/indexes/nope/snapshot", None, 404, "index_not_found", "'nope'"),
        (
            "PUT",
            "/v1/indexes/x",
            {"dim": 3, "metric": "jaccard", "model_version": 1},
            422,
            "invalid_request",
            "metric",
        ),
        (
            "PUT",
            "/v1/indexes/x",
            {"dim": 0, "metric": "l2", "model_version": 1},
            422,
            "invalid_request",
            "dim",
        ),
        (
            "PUT",
            "/v1/indexes/.x",
            {"dim": 3, "metric": "l2", "model_version": 1},
            422,
            "invalid_request",
            "name",
        ),
        (
            "POST",
            "/v1/indexes/items/upsert",
            {"items": [{"id": "a", "vector": [1, 2]}]},
            422,
            "invalid_vector",
            "dimension 3",
        ),
        (
            "POST",
            "/v1/indexes/items/upsert",
            {"items": [{"id": " a", "vector": [1, 2, 3]}]},
            422,
            "invalid_request",
            "items.0.id",
        ),
        (
            "POST",
            "/v1/indexes/items/upsert",
            {"items": [{"id": "a/b", "vector": [1, 2, 3]}]},
            422,
            "invalid_request",
            'items.0.id: an id has no "/"',
        ),
        ("POST", "/v1/indexes/items/delete", {"ids": ["a\nb"]}, 422, "invalid_request", "ids.0"),
        (
            "PUT",
            "/v1/indexes/x",
            {"dim": "3", "metric": "l2", "model_version": 1},
            422,
            "invalid_request",
            "dim: Input should be a valid integer",
        ),
        ("POST", "/v1/indexes/items/upsert", {"items": []}, 422, "invalid_request", "items"),
        ("POST", "/v1/indexes/items/delete", {"ids": "car"}, 422, "invalid_request", "ids"),
        ("GET", "/v1/nothing-here", None, 404, "not_found", "Not Found"),
        ("PATCH", "/v1/indexes/items", None, 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_bad_requests_get_4xx_with_error_and_detail(items, method, path, body, status, code, says):
    r = items.request(method, path, json=body, headers=TOKEN)
    assert says in error(r, status, code)


def test_nan_in_an_upsert_changes_nothing(items):
    raw = '{"items": [{"id": "car", "vector": [NaN, 1, 0]}]}'
    r = items.post(
        "/v1/indexes/items/upsert",
        content=raw,
        headers={**TOKEN, "content-type": "application/json"},
    )
    error(r, 422, "invalid_request")
    top = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1}).json()
    assert top["items"][0] == {"id": "car", "score": pytest.approx(1.0)}


def test_batches_are_bounded(tmp_path):
    settings = node_settings(tmp_path, token=None)
    settings = settings.model_copy(
        update={"query_node": settings.query_node.model_copy(update={"max_batch": 2})}
    )
    with TestClient(create_app(settings)) as client:
        client.put("/v1/indexes/items", json={"dim": 3, "metric": "l2", "model_version": 1})
        r = client.post("/v1/indexes/items/upsert", json={"items": ITEMS})
        assert "at most 2 items" in error(r, 413, "too_large")
        r = client.post("/v1/indexes/items/items", json={"ids": ["a", "b", "c"]})
        assert "at most 2 items" in error(r, 413, "too_large")
        assert client.get("/v1/indexes").json()[0]["count"] == 0


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path):
    settings = node_settings(tmp_path, token=None)
    settings = settings.model_copy(
        update={"query_node": settings.query_node.model_copy(update={"max_body_bytes": 4096})}
    )
    big = {"items": [{"id": f"i{n}", "vector": [0.5, 0.5, 0.5]} for n in range(400)]}
    raw = json.dumps(big).encode()
    assert len(raw) > 4096
    read: list[int] = []

    def chunks():
        # Sent without a Content-Length: counted as it arrives, refused past the limit.
        for start in range(0, len(raw), 1024):
            read.append(start)
            yield raw[start : start + 1024]

    with TestClient(create_app(settings)) as client:
        client.put("/v1/indexes/items", json={"dim": 3, "metric": "l2", "model_version": 1})
        declared = client.post("/v1/indexes/items/upsert", content=raw)
        assert "at most 4096" in error(declared, 413, "too_large")
        streamed = client.post("/v1/indexes/items/upsert", content=chunks())
        assert "limit of 4096 bytes" in error(streamed, 413, "too_large")
        assert client.get("/v1/indexes").json()[0]["count"] == 0
        small = {"items": big["items"][:3]}
        assert client.post("/v1/indexes/items/upsert", json=small).status_code == 200


def test_searches_are_answered_before_the_route_and_errors_by_it(items, monkeypatch):
    """``SearchFastPath`` answers a good search itself; what it cannot answer reaches the
    route with its body intact, and is refused there as before."""
    reached = []
    real = indexes._parsed

    async def spy(model, request):
        reached.append(model.__name__)
        return await real(model, request)

    monkeypatch.setattr(indexes, "_parsed", spy)
    good = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 2})
    assert [h["id"] for h in good.json()["items"]] == ["car", "doll"]
    assert reached == []
    bad = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 0})
    assert "k must be between" in error(bad, 400, "out_of_range")
    missing = items.post("/v1/indexes/nope/search", json={"vector": [1, 0, 0], "k": 1})
    error(missing, 404, "index_not_found")
    unparsed = items.post("/v1/indexes/items/search", content=b'{"vector": [1, 0')
    error(unparsed, 422, "invalid_request")
    assert reached == ["SearchRequest"] * 3
    text = items.get("/metrics").text
    for status in ("200", "400", "404", "422"):
        line = f'route="/v1/indexes/{{name}}/search",status="{status}"}} 1.0'
        assert line in text, status


def test_a_streamed_search_over_the_body_limit_is_refused(tmp_path):
    settings = node_settings(tmp_path, token=None)
    settings = settings.model_copy(
        update={"query_node": settings.query_node.model_copy(update={"max_body_bytes": 4096})}
    )
    raw = json.dumps({"vector": [0.5] * 1000, "k": 1}).encode()

    def chunks():
        for start in range(0, len(raw), 1024):
            yield raw[start : start + 1024]

    with TestClient(create_app(settings)) as client:
        client.put("/v1/indexes/items", json={"dim": 3, "metric": "l2", "model_version": 1})
        streamed = client.post("/v1/indexes/items/search", content=chunks())
        assert "limit of 4096 bytes" in error(streamed, 413, "too_large")
        ok = client.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1})
        assert ok.status_code == 200, ok.text


def test_a_search_during_a_write_waits_in_a_worker_and_answers(items, monkeypatch):
    """The event-loop fast path must hand a busy index to the thread pool, not fail."""
    calls = []
    real = QueryNode.search

    def busy_first(self, *args, wait=True, **kwargs):
        calls.append(wait)
        if not wait:
            raise IndexBusy("the index is being written")
        return real(self, *args, wait=wait, **kwargs)

    monkeypatch.setattr(QueryNode, "search", busy_first)
    r = items.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["id"] == "car"
    assert calls == [False, True]


def _state(client) -> tuple:
    """What a refused request must leave as it was: every index, its items and answers."""
    indexes = client.get("/v1/indexes").json()
    found = client.post("/v1/indexes/items/items", json={"ids": [i["id"] for i in ITEMS]}).json()
    top = client.post("/v1/indexes/items/search", json={"vector": [1, 0, 0], "k": 3}).json()
    return indexes, found, top


def test_generated_bad_input_is_refused_cleanly_and_changes_nothing(items):
    before = _state(items)
    seen = refuse_generated_bad_input(items.app, items, TOKEN, pinned={"name": "items"})
    # Every operation that takes input was reached, and not only by 404s for unknown indexes.
    paths = {path for _, path, _ in seen}
    assert {"/v1/indexes/{name}/upsert", "/v1/indexes/{name}/search"} <= paths, seen
    assert sum(n for (_, _, status), n in seen.items() if status == 422) > 50, seen
    assert _state(items) == before


def test_a_node_without_a_token_reads_no_snapshot_it_is_pointed_at(tmp_path):
    """Its writes are open to anyone who reaches it: it must not read files they name."""
    with TestClient(create_app(node_settings(tmp_path, token=None))) as client:
        r = client.post("/v1/indexes/items/load", json={"path": str(tmp_path)})
        assert "needs a node started with a token" in error(r, 403, "forbidden")

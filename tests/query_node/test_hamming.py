"""Metric hamming through the node's HTTP API and the gateway's merge: binary codes given as 0/1
numbers, scored by the number of differing bits (smaller is nearer). The backends' own checks
(recall, filters, churn, snapshots) are the conformance suite's, ``tests/ann/test_backends.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nrtrec.core.settings import QueryNodeSettings, Settings
from nrtrec.query_node import create_app
from nrtrec.query_node.fanout import merge_hits
from nrtrec.schemas.query_api import Metric
from nrtrec.schemas.records import IndexDeclaration
from tests.ann.helpers import random_codes

TOKEN = {"Authorization": "Bearer test-token"}
BITS = 64
CODES = random_codes(1500, BITS, seed=41)
ITEMS = [
    {"id": f"i{i}", "vector": code.astype(int).tolist(), "attributes": {"shelf": i % 10}}
    for i, code in enumerate(CODES)
]


def settings(tmp_path, **query_node) -> Settings:
    return Settings(
        run_dir=tmp_path / "run", token="test-token", query_node=QueryNodeSettings(**query_node)
    )


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    return body["detail"]


def create(client, name: str = "codes", **spec) -> dict:
    body = {"dim": BITS, "metric": "hamming", "model_version": 1, **spec}
    r = client.put(f"/v1/indexes/{name}", json=body, headers=TOKEN)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize(("backend", "graph_bytes"), [("hnsw", BITS * 4), ("faiss", BITS / 8)])
def test_scores_count_differing_bits_nearest_first_and_survive_a_restart(
    tmp_path, backend, graph_bytes
):
    # The graph answers (no exact search), filtered and not.
    graph_only = settings(
        tmp_path,
        exact_search_max_count=0,
        exact_search_max_fraction=0.0,
        exact_search_cost_ratio=0.0,
    )
    query = CODES[0].copy()
    query[:5] = 1 - query[:5]  # five bits from i0
    searches = [
        {"vector": query.astype(int).tolist(), "k": 10},
        {"vector": query.astype(int).tolist(), "k": 10, "filter": {"shelf": 0}},
    ]
    with TestClient(create_app(graph_only)) as client:
        created = create(client, backend=backend)
        assert (created["metric"], created["backend"], created["quantization"]) == (
            "hamming",
            backend,
            "none",
        )
        r = client.post("/v1/indexes/codes/upsert", json={"items": ITEMS}, headers=TOKEN)
        assert r.status_code == 200, r.text
        [listed] = client.get("/v1/indexes").json()
        # faiss packs a code 8 bits a byte; hnswlib keeps float32. The float32 copy beside the
        # graph is the index's own (exact search, look-ups).
        memory = listed["memory"]
        assert memory["graph_vector_bytes"] == graph_bytes
        assert memory["full_precision_bytes"] == BITS * 4
        assert memory["total_bytes"] == pytest.approx(
            graph_bytes + memory["graph_link_bytes"] + BITS * 4
        )
        answers = []
        for search in searches:
            hits = client.post("/v1/indexes/codes/search", json=search).json()["items"]
            assert hits[0] == {"id": "i0", "score": 5.0}
            for hit in hits:
                code = CODES[int(hit["id"][1:])]
                assert hit["score"] == np.count_nonzero(code != query)
            assert [h["score"] for h in hits] == sorted(h["score"] for h in hits)
            answers.append(hits)
        assert all(int(h["id"][1:]) % 10 == 0 for h in answers[1])
        stored = client.post("/v1/indexes/codes/items", json={"ids": ["i3"]}).json()["items"]
        assert stored[0]["vector"] == CODES[3].tolist()
    # Saved at shutdown, loaded at start: the same spec and the same answers.
    with TestClient(create_app(graph_only)) as again:
        [listed] = again.get("/v1/indexes").json()
        assert (listed["metric"], listed["backend"], listed["count"]) == ("hamming", backend, 1500)
        for search, hits in zip(searches, answers, strict=True):
            assert again.post("/v1/indexes/codes/search", json=search).json()["items"] == hits


@pytest.mark.parametrize("backend", ["hnsw", "faiss"])
@pytest.mark.parametrize(("value", "shown"), [(0.5, "0.5"), (2, "2.0"), (-1, "-1.0")])
def test_a_value_that_is_not_a_bit_is_refused_with_its_position(tmp_path, backend, value, shown):
    with TestClient(create_app(settings(tmp_path))) as client:
        create(client, backend=backend)
        client.post("/v1/indexes/codes/upsert", json={"items": ITEMS[:3]}, headers=TOKEN)
        bad = [0] * BITS
        bad[9] = value
        items = [ITEMS[3], {"id": "bad", "vector": bad}]
        r = client.post("/v1/indexes/codes/upsert", json={"items": items}, headers=TOKEN)
        detail = error(r, 422, "invalid_vector")
        assert f"vector 1, position 9: {shown} is not a bit" in detail
        r = client.post("/v1/indexes/codes/search", json={"vector": bad, "k": 1})
        assert f"vector 0, position 9: {shown} is not a bit" in error(r, 422, "invalid_vector")
        # Nothing of the refused batch was written.
        assert client.get("/v1/indexes").json()[0]["count"] == 3


def test_nan_is_refused_too(tmp_path):
    # JSON has no NaN, but Python's parser reads one; the request's own check refuses it.
    with TestClient(create_app(settings(tmp_path))) as client:
        create(client)
        body = '{"vector": [' + ", ".join(["0"] * 9 + ["NaN"] + ["0"] * (BITS - 10)) + "]}"
        r = client.post(
            "/v1/indexes/codes/search",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert "vector.9" in error(r, 422, "invalid_request")


def test_int8_and_faiss_dims_not_a_multiple_of_8_are_refused_at_creation(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        for backend in ("hnsw", "faiss"):
            body = {"dim": BITS, "metric": "hamming", "model_version": 1}
            body |= {"backend": backend, "quantization": "int8"}
            r = client.put("/v1/indexes/codes", json=body, headers=TOKEN)
            assert "int8 does not apply to metric hamming" in error(r, 422, "invalid_spec")
        body = {"dim": 12, "metric": "hamming", "model_version": 1, "backend": "faiss"}
        r = client.put("/v1/indexes/codes", json=body, headers=TOKEN)
        assert "multiple of 8, got 12" in error(r, 422, "invalid_spec")
        assert client.get("/v1/indexes").json() == []
        # hnswlib takes any number of bits.
        assert create(client, dim=12)["dim"] == 12


def test_a_node_whose_default_is_int8_creates_hamming_indexes_without_it(tmp_path):
    node = settings(tmp_path, backend="faiss", quantization="int8")
    with TestClient(create_app(node)) as client:
        created = create(client)
        assert (created["backend"], created["quantization"]) == ("faiss", "none")
        body = {"dim": 16, "metric": "l2", "model_version": 1}
        r = client.put("/v1/indexes/floats", json=body, headers=TOKEN)
        assert r.json()["quantization"] == "int8"


def test_the_gateway_merges_hamming_scores_ascending():
    a = [{"id": "a1", "score": 3.0}, {"id": "a2", "score": 40.0}]
    b = [{"id": "b1", "score": 7.0}, {"id": "a2", "score": 12.0}, {"id": "b0", "score": 7.0}]
    merged = merge_hits([a, b], 4, "hamming")
    assert merged == [
        {"id": "a1", "score": 3.0},
        {"id": "b0", "score": 7.0},  # ties by id
        {"id": "b1", "score": 7.0},
        {"id": "a2", "score": 12.0},  # an id twice: its nearer score
    ]
    assert Metric.HAMMING.smaller_is_nearer and Metric.L2.smaller_is_nearer
    assert not (Metric.IP.smaller_is_nearer or Metric.COSINE.smaller_is_nearer)


def test_a_declaration_of_a_hamming_index_is_a_valid_record():
    record = {"name": "codes", "model_version": 1, "dim": 64, "metric": "hamming"}
    record |= {"M": 16, "ef_construction": 200, "max_elements": 10, "ts": 0}
    assert IndexDeclaration.model_validate_json(json.dumps(record)).metric == "hamming"

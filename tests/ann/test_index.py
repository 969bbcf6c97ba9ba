"""VectorIndex on hnswlib: in-place updates, slot reuse, growth, checks. Recall and what every
backend must do: test_backends.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nrtrec.ann import InvalidSpec, InvalidVector, OutOfRange, Strategy
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.query_api import Metric
from tests.ann.helpers import exact_neighbours, new_index, random_vectors, recall

N, DIM = 2_000, 32
# Exact search only where a filter asks for it: these tests measure the graph.
GRAPH_ONLY = QueryNodeSettings(
    exact_search_max_count=0, exact_search_max_fraction=0.0, exact_search_cost_ratio=0.0
)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return random_vectors(N, DIM, seed=1)


def test_index_grows_by_doubling_past_its_initial_capacity(data):
    index = new_index(DIM, Metric.L2, GRAPH_ONLY, max_elements=100)
    for start in range(0, 2000, 500):
        index.upsert([f"item-{i}" for i in range(start, start + 500)], data[start : start + 500])
    # 100 -> 500 (the first batch needs it) -> 1000 -> 2000.
    assert index.count == 2000
    assert index.capacity == 2000
    assert index._graph.capacity == index.capacity


def test_upsert_of_an_existing_id_replaces_it_in_place():
    index = new_index(DIM, max_elements=100)
    vectors = random_vectors(50, DIM)
    index.upsert([f"i{i}" for i in range(50)], vectors, [{"n": i} for i in range(50)])
    moved = -vectors[7] * 10
    index.upsert(["i7"], [moved], [{"n": 700}])
    assert index.count == 50
    assert index._graph.size == 50
    top = index.search(moved, 1, ef=50)
    assert top.hits[0].id == "i7" and top.hits[0].score == pytest.approx(0.0, abs=1e-3)
    assert index.attributes("i7") == {"n": 700}
    np.testing.assert_allclose(index.vector("i7"), moved)


def test_last_occurrence_wins_within_one_upsert():
    index = new_index(4)
    index.upsert(["a", "a"], [[1, 0, 0, 0], [0, 1, 0, 0]], [{"v": 1}, {"v": 2}])
    assert index.count == 1 and index.attributes("a") == {"v": 2}
    np.testing.assert_allclose(index.vector("a"), [0, 1, 0, 0])


def test_deleted_items_vanish_and_their_slots_are_reused():
    index = new_index(DIM, settings=GRAPH_ONLY, max_elements=3000)
    rng = np.random.default_rng(3)
    live = {f"base-{i}": v for i, v in enumerate(random_vectors(2000, DIM, seed=4))}
    index.upsert(list(live), np.stack(list(live.values())))
    capacity, hnsw_elements = index.capacity, index._graph.size
    for round_ in range(10):
        gone = rng.choice(sorted(live), 500, replace=False).tolist()
        assert index.delete([*gone, "never-there"]) == 500
        for item_id in gone:
            del live[item_id]
        assert all(item_id not in index for item_id in gone)
        fresh = {f"r{round_}-{i}": v for i, v in enumerate(random_vectors(500, DIM, round_ + 10))}
        index.upsert(list(fresh), np.stack(list(fresh.values())))
        live.update(fresh)
        assert index.count == 2000
    # Ten rounds of 500 deletes and 500 adds fit in the slots of the first 2000 items.
    assert index.capacity == capacity
    assert index._graph.size == hnsw_elements == 2000
    assert index._graph.capacity == capacity
    ids = list(live)
    data = np.stack([live[i] for i in ids])
    queries = random_vectors(50, DIM, seed=99)
    truth = exact_neighbours(data, queries, 10, Metric.L2)
    found = [[h.id for h in index.search(q, 10).hits] for q in queries]
    assert recall(found, [[ids[i] for i in row] for row in truth]) >= 0.95
    deleted = set(gone)
    assert not deleted & {item for row in found for item in row}


def test_ten_turnovers_reuse_the_slots_and_no_search_returns_a_deleted_id():
    """The index replaced 10 times over by new ids (upserts and deletes interleaved): memory
    stays that of one index, and every search of every kind (graph, filtered graph, exact)
    after each delete sees none of the deleted ids."""
    n = 400
    index = new_index(DIM, settings=QueryNodeSettings(exact_search_max_count=50))
    queries = random_vectors(20, DIM, seed=5)
    live: list[str] = []
    deleted: set[str] = set()
    capacity = None
    for turn in range(11):
        fresh = [f"t{turn}-{i}" for i in range(n)]
        vectors = random_vectors(n, DIM, seed=100 + turn)
        buckets = [{"bucket": i % 10} for i in range(n)]
        for start in range(0, n, 100):  # in batches, deleting as new ones arrive
            index.upsert(
                fresh[start : start + 100],
                vectors[start : start + 100],
                buckets[start : start + 100],
            )
            old, live = live[:100], live[100:]
            index.delete(old)
            deleted.update(old)
        live += fresh
        capacity = capacity or index.capacity
        assert index.count == n and index.capacity == capacity
        for q in queries:
            for kind in ({}, {"filter": {"bucket": 3}}, {"filter": {"bucket": {"in": [1, 2]}}}):
                hits = {h.id for h in index.search(q, 50, **kind).hits}
                assert not hits & deleted, (turn, kind)


def test_a_deleted_id_can_come_back():
    index = new_index(4)
    index.upsert(["a", "b"], [[1, 0, 0, 0], [0, 1, 0, 0]])
    index.delete(["a"])
    assert index.search([1, 0, 0, 0], 2).hits[0].id == "b"
    index.upsert(["a"], [[1, 0, 0, 0]])
    assert [h.id for h in index.search([1, 0, 0, 0], 2).hits] == ["a", "b"]


def test_k_larger_than_the_index_returns_what_there_is():
    index = new_index(4, settings=GRAPH_ONLY)
    index.upsert(["a", "b", "c"], np.eye(4)[:3])
    index.delete(["c"])
    assert {h.id for h in index.search([1, 1, 1, 1], 10).hits} == {"a", "b"}


def test_an_empty_index_answers_nothing():
    result = new_index(4).search([1, 2, 3, 4], 10)
    assert result.hits == [] and result.strategy is Strategy.EMPTY


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([1.0, 2.0, 3.0], "dimension 4, got a vector of dimension 3"),
        ([1.0, float("nan"), 0.0, 0.0], "NaN or infinity"),
        ([1.0, float("inf"), 0.0, 0.0], "NaN or infinity"),
        ([1e39, 0.0, 0.0, 0.0], "NaN or infinity"),
        (["a", "b", "c", "d"], "lists of numbers"),
    ],
)
def test_bad_vectors_are_refused_and_change_nothing(vector, message):
    index = new_index(4)
    index.upsert(["a"], [[1, 0, 0, 0]])
    with pytest.raises(InvalidVector, match=message):
        index.upsert(["a", "b"], [[0, 1, 0, 0], vector])
    with pytest.raises(InvalidVector, match=message):
        index.search(vector, 1)
    assert index.count == 1
    np.testing.assert_allclose(index.vector("a"), [1, 0, 0, 0])


def test_cosine_refuses_zero_vectors():
    index = new_index(4, Metric.COSINE)
    with pytest.raises(InvalidVector, match="zero"):
        index.upsert(["a"], [[0, 0, 0, 0]])
    with pytest.raises(InvalidVector, match="zero"):
        index.search([0, 0, 0, 0], 1)
    # Not zero in JSON's float64, zero in float32: refused too, not searched as a NaN direction.
    with pytest.raises(InvalidVector, match="zero"):
        index.search([1e-50, 0.0, 0.0, 0.0], 1)


def test_a_query_as_a_list_is_searched_as_its_float32_array():
    index = new_index(4, Metric.COSINE)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 4)).astype(np.float32)
    index.upsert([f"i{n}" for n in range(50)], vectors)
    for query in rng.standard_normal((20, 4)):
        as_list = index.search(query.tolist(), 5).hits
        as_array = index.search(query.astype(np.float32), 5).hits
        assert [h.id for h in as_list] == [h.id for h in as_array]
        np.testing.assert_allclose([h.score for h in as_list], [h.score for h in as_array])


def test_ids_and_vectors_must_pair_up():
    index = new_index(4)
    with pytest.raises(InvalidVector, match="expected 2 vector"):
        index.upsert(["a", "b"], [[1, 0, 0, 0]])
    with pytest.raises(InvalidVector, match="attribute sets"):
        index.upsert(["a"], [[1, 0, 0, 0]], [{}, {}])


@pytest.mark.parametrize(("k", "ef"), [(0, None), (1001, None), (10, 0), (10, 5000), (2.5, None)])
def test_k_and_ef_are_bounded_by_settings(k, ef):
    index = new_index(4)
    index.upsert(["a"], [[1, 0, 0, 0]])
    with pytest.raises(OutOfRange):
        index.search([1, 0, 0, 0], k, ef=ef)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "../etc"},
        {"name": ".hidden"},
        {"metric": "jaccard"},
        {"dim": 0},
        {"model_version": 0},
        {"M": 1},
    ],
)
def test_bad_specs_are_refused(spec):
    from nrtrec.ann import IndexSpec

    fields = {"name": "items", "model_version": 1, "dim": 4, "metric": "l2", **spec}
    with pytest.raises(InvalidSpec):
        IndexSpec(**fields)


def test_searches_run_while_writes_go_on():
    # Small chunks: each upsert takes the write lock five times, and searches of two efs go
    # between them.
    index = new_index(
        16, settings=GRAPH_ONLY.model_copy(update={"write_chunk": 20}), max_elements=100
    )
    stable = random_vectors(2000, 16, seed=5)
    index.upsert([f"s{i}" for i in range(2000)], stable)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search(ef: int) -> None:
        try:
            while not stop.is_set():
                hits = index.search(stable[7], 5, ef=ef).hits
                assert hits[0].id == "s7"
                assert all(h.id is not None for h in hits)
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    readers = [threading.Thread(target=search, args=(ef,)) for ef in (40, 40, 80)]
    for t in readers:
        t.start()
    churn = random_vectors(3000, 16, seed=6) + 100  # far away: never nearer than s7
    try:
        for start in range(0, 3000, 100):
            ids = [f"c{i}" for i in range(start, start + 100)]
            index.upsert(ids, churn[start : start + 100])
            index.delete(ids[:50])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]
    assert index.count == 2000 + 1500

"""The conformance suite every ANN backend passes (``ann.graphs``): hnswlib, faiss, and faiss
with int8 codes over float vectors, and hnswlib and faiss (binary HNSW) over 256-bit codes
with metric hamming. The same checks, the same data, through ``VectorIndex``: recall against
exact search, replace and delete, churn, filters (broad in the graph, tight exact), snapshots,
the untrained start of a quantized graph, and memory per vector."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from nrtrec.ann import IndexSpec, InvalidSpec, InvalidVector, SnapshotStore, Strategy, VectorIndex
from nrtrec.ann.graphs import FilterSupport, graph_class
from nrtrec.ann.graphs.faiss_hnsw import TRAIN_SIZE
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.query_api import Backend, Metric, Quantization
from tests.ann.helpers import distance_keys, random_codes, random_vectors, recall_with_ties
from tests.waiting import wait_until

N, DIM, BITS, QUERIES = 5_000, 16, 256, 100


@dataclass(frozen=True)
class Kind:
    """A backend as the suite runs it: its quantization, and whether it holds float vectors or
    binary codes (``bits``: metric hamming, whatever metric a test asks of float vectors)."""

    backend: Backend
    quantization: Quantization = Quantization.NONE
    bits: bool = False

    def __str__(self) -> str:
        return f"{self.backend.value}-{'hamming' if self.bits else self.quantization.value}"


HNSW, FAISS = Kind(Backend.HNSW), Kind(Backend.FAISS)
INT8 = Kind(Backend.FAISS, Quantization.INT8)
HNSW_BITS, FAISS_BITS = Kind(Backend.HNSW, bits=True), Kind(Backend.FAISS, bits=True)
KINDS = [HNSW, FAISS, INT8, HNSW_BITS, FAISS_BITS]
# Each kind with each metric it serves: bits only with hamming, floats with the others.
BUILT = [
    (kind, metric) for kind in KINDS for metric in Metric if (metric is Metric.HAMMING) == kind.bits
]
# Exact search only where these tests ask for it: they measure the graph.
GRAPH_ONLY = QueryNodeSettings(
    exact_search_max_count=0, exact_search_max_fraction=0.0, exact_search_cost_ratio=0.0
)


def spec(kind: Kind, metric=Metric.COSINE, **fields) -> IndexSpec:
    metric, dim = (Metric.HAMMING, BITS) if kind.bits else (metric, DIM)
    return IndexSpec(
        "items", 1, dim, metric, backend=kind.backend, quantization=kind.quantization, **fields
    )


def ids(rows) -> list[str]:
    return [f"item-{i}" for i in rows]


@functools.cache
def dataset(bits: bool) -> tuple[np.ndarray, np.ndarray]:
    """The items and the queries: 16-d gaussian vectors, or 256-bit codes for hamming."""
    if bits:
        return random_codes(N, BITS, seed=21), random_codes(QUERIES, BITS, seed=22)
    return random_vectors(N, DIM, seed=21), random_vectors(QUERIES, DIM, seed=22)


def recall_at(found: list[list[str]], rows, queries, k: int, metric: Metric) -> float:
    """recall@k of searches (their hit ids, per query) against exact search over ``rows`` of
    the metric's data set, an item tied with the k-th true neighbour counting as one."""
    data = dataset(metric is Metric.HAMMING)[0]
    position = {f"item-{row}": i for i, row in enumerate(rows)}
    keys = distance_keys(data[rows], queries, metric)
    return recall_with_ties([[position[i] for i in hits] for hits in found], keys, k)


@pytest.fixture(scope="module", params=KINDS, ids=str)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def data():
    return dataset(False)[0]


@pytest.fixture(scope="module")
def queries():
    return dataset(False)[1]


@pytest.fixture(
    scope="module", params=BUILT, ids=lambda p: str(p[0]) if p[0].bits else f"{p[0]}-{p[1]}"
)
def built(request):
    kind, metric = request.param
    data = dataset(kind.bits)[0]
    index = VectorIndex(spec(kind, metric, max_elements=1000), GRAPH_ONLY)
    for start in range(0, N, 2000):  # in batches, so the index grows on the way
        index.upsert(ids(range(start, min(N, start + 2000))), data[start : start + 2000])
    return index


@pytest.mark.parametrize("k", [10, 100])
def test_recall_against_exact_search(built, k):
    queries = dataset(built.metric is Metric.HAMMING)[1]
    found = []
    for q in queries:
        result = built.search(q, k)
        assert result.strategy is Strategy.GRAPH
        assert len(result.hits) == k
        found.append([h.id for h in result.hits])
    r = recall_at(found, range(N), queries, k, built.metric)
    print(f"{built.spec.backend}/{built.spec.quantization} {built.metric} recall@{k} = {r:.4f}")
    assert r >= 0.95


def test_scores_are_the_metric_s_own_even_for_int8(built):
    # A quantized graph's candidates are rescored: scores equal exact search's to float32.
    data, queries = dataset(built.metric is Metric.HAMMING)
    graph = built.search(queries[0], 5)
    exact = built._exact(queries[0], 5, None, built.count)
    if built.metric is not Metric.HAMMING:  # whole numbers tie: which tied id comes is free
        assert [h.id for h in graph.hits] == [h.id for h in exact.hits]
    np.testing.assert_allclose(
        [h.score for h in graph.hits], [h.score for h in exact.hits], rtol=1e-4, atol=1e-4
    )
    q = queries[0].astype(np.float64)
    for hit in graph.hits:
        x = data[int(hit.id.removeprefix("item-"))].astype(np.float64)
        expected = {
            Metric.L2: np.linalg.norm(x - q),
            Metric.IP: x @ q,
            Metric.COSINE: x @ q / (np.linalg.norm(x) * np.linalg.norm(q)),
            Metric.HAMMING: np.count_nonzero(x != q),
        }[built.metric]
        assert hit.score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    scores = [h.score for h in graph.hits]
    assert scores == sorted(scores, reverse=not built.metric.smaller_is_nearer)


def test_an_upsert_replaces_the_vector_and_a_delete_removes_it(kind):
    data, _ = dataset(kind.bits)
    index = VectorIndex(spec(kind), GRAPH_ONLY)
    index.upsert(ids(range(2000)), data[:2000])
    target = data[3000]
    index.upsert(["item-7"], [target])
    assert index.count == 2000
    stored = target if kind.bits else target / np.linalg.norm(target)  # unit for cosine
    np.testing.assert_allclose(index.vector("item-7"), stored, atol=1e-6)
    assert index.search(target, 1).hits[0].id == "item-7"
    index.delete(["item-7", "never-there"])
    assert "item-7" not in index
    assert all(h.id != "item-7" for h in index.search(target, 50).hits)


def test_churn_never_returns_a_deleted_id_and_recall_holds(kind):
    # Five turnovers of 1,500 items: faiss retires ids and compacts; hnswlib reuses slots.
    data, queries = dataset(kind.bits)
    index = VectorIndex(spec(kind, Metric.L2), GRAPH_ONLY)
    live = list(range(1500))
    index.upsert(ids(live), data[live])
    for turn in range(1, 6):
        fresh = list(range(turn * 600, turn * 600 + 1500))
        gone = sorted(set(live) - set(fresh))
        index.delete(ids(gone))
        index.upsert(ids(fresh), data[fresh])
        live = fresh
        hits = {h.id for q in queries[:20] for h in index.search(q, 20).hits}
        assert hits <= set(ids(live)), f"turn {turn}: deleted ids came back"
    assert index.count == len(live)
    found = [[h.id for h in index.search(q, 10).hits] for q in queries]
    assert recall_at(found, live, queries, 10, index.metric) >= 0.95


def _labelled(kind, settings):
    data, _ = dataset(kind.bits)
    index = VectorIndex(spec(kind, Metric.L2, max_elements=N), settings)
    buckets = np.random.default_rng(23).integers(0, 100, N)
    attrs = [{"bucket": int(b), "band": f"band-{b // 10}"} for b in buckets]
    index.upsert(ids(range(N)), data, attrs)
    return index, buckets


@pytest.mark.parametrize(
    ("raw", "select", "settings", "strategy"),
    [
        # 10 %: in the graph walk (the backend's own filter), exact search switched off.
        ({"band": "band-3"}, lambda b: b // 10 == 3, GRAPH_ONLY, Strategy.FILTERED_GRAPH),
        # 1 %: exact search over the matching items, as the node's defaults choose.
        ({"bucket": 42}, lambda b: b == 42, QueryNodeSettings(), Strategy.EXACT),
    ],
    ids=["ten-percent-graph", "one-percent-exact"],
)
def test_filtered_search_keeps_recall(kind, raw, select, settings, strategy):
    _, queries = dataset(kind.bits)
    index, buckets = _labelled(kind, settings)
    rows = np.flatnonzero(select(buckets))
    found = []
    for q in queries:
        result = index.search(q, 10, filter=raw)
        assert result.strategy is strategy
        assert result.candidates == len(rows)
        found.append([h.id for h in result.hits])
    assert {h for hits in found for h in hits} <= set(ids(rows))
    assert recall_at(found, rows, queries, 10, index.metric) >= 0.95


def test_a_snapshot_loads_back_answering_the_same(kind, tmp_path):
    data, queries = dataset(kind.bits)
    index = VectorIndex(spec(kind), GRAPH_ONLY)
    index.upsert(ids(range(3000)), data[:3000], [{"n": i} for i in range(3000)])
    index.delete(ids(range(0, 3000, 7)))
    store = SnapshotStore(tmp_path, GRAPH_ONLY)
    store.save(index)
    loaded, _ = store.load("items", 1)
    assert loaded.spec == index.spec and loaded.count == index.count
    for q in queries[:20]:
        assert loaded.search(q, 10).hits == index.search(q, 10).hits
    loaded.upsert(["item-0"], [data[0]], [{"n": 0}])
    assert loaded.search(data[0], 1).hits[0].id == "item-0"


def test_writes_and_searches_run_together(kind):
    data, _ = dataset(kind.bits)
    index = VectorIndex(spec(kind), GRAPH_ONLY)
    index.upsert(ids(range(1500)), data[:1500])
    errors: list[BaseException] = []

    def search():
        try:
            for q in data[:300]:
                assert len(index.search(q, 10).hits) == 10
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(1500, 3000, 100):
        index.upsert(ids(range(start, start + 100)), data[start : start + 100])
    for t in threads:
        t.join()
    assert not errors, errors
    assert index.count == 3000


def test_int8_answers_exactly_until_it_has_vectors_to_train_on(data, tmp_path):
    index = VectorIndex(spec(INT8), GRAPH_ONLY)
    index.upsert(ids(range(TRAIN_SIZE - 1)), data[: TRAIN_SIZE - 1])
    assert index.search(data[0], 5).strategy is Strategy.EXACT
    # A snapshot taken before training keeps the waiting vectors.
    SnapshotStore(tmp_path, GRAPH_ONLY).save(index)
    loaded, _ = SnapshotStore(tmp_path, GRAPH_ONLY).load("items", 1)
    for each in (index, loaded):
        each.upsert(["item-last"], [data[TRAIN_SIZE]])
        result = each.search(data[0], 5)
        assert result.strategy is Strategy.GRAPH
        assert result.hits[0].id == "item-0"


def test_int8_codes_take_a_quarter_of_float32(data):
    flat = VectorIndex(spec(FAISS), GRAPH_ONLY)
    int8 = VectorIndex(spec(INT8), GRAPH_ONLY)
    for index in (flat, int8):
        index.upsert(ids(range(2000)), data[:2000])
    assert int8.memory().vectors == DIM == flat.memory().vectors / 4
    assert int8.memory().total < flat.memory().total


def test_hamming_codes_take_a_bit_a_dimension_in_faiss():
    codes = dataset(True)[0][:2000]
    for kind, graph_bytes in ((HNSW_BITS, BITS * 4), (FAISS_BITS, BITS / 8)):
        index = VectorIndex(spec(kind), GRAPH_ONLY)
        index.upsert(ids(range(2000)), codes)
        # hnswlib holds the 0/1 values as float32; faiss packs 8 to a byte. Beside either,
        # the index's float32 copy (exact search, look-ups) is what any index keeps.
        assert index.memory().vectors == graph_bytes
        assert index.full_precision_bytes == BITS * 4


@pytest.mark.parametrize("kind", [HNSW_BITS, FAISS_BITS], ids=str)
@pytest.mark.parametrize(
    ("value", "shown"), [(0.5, "0.5"), (2, "2.0"), (-1, "-1.0"), (float("nan"), "nan")]
)
def test_hamming_takes_only_bits_in_items_and_queries(kind, value, shown):
    index = VectorIndex(spec(kind), GRAPH_ONLY)
    codes = dataset(True)[0][:3].copy()
    index.upsert(ids(range(2)), codes[:2])
    codes[2, 7] = value
    reason = f"vector 0, position 7: {shown} is not a bit"
    with pytest.raises(InvalidVector, match=reason):
        index.upsert(["bad"], codes[2:])
    with pytest.raises(InvalidVector, match=reason):
        index.search(codes[2], 1)
    with pytest.raises(InvalidVector, match=reason):
        index.search(codes[2].tolist(), 1)
    assert index.count == 2 and "bad" not in index
    # All zeros is a code like any other (cosine alone needs a direction).
    assert index.search(np.zeros(BITS, np.float32), 1).hits[0].score == pytest.approx(
        min(np.count_nonzero(codes[:2], axis=1))
    )


def test_what_each_backend_declares():
    assert graph_class(Backend.HNSW).filter_support is FilterSupport.CALLBACK
    assert graph_class("faiss").filter_support is FilterSupport.NATIVE
    with pytest.raises(InvalidSpec, match="int8"):
        spec(Kind(Backend.HNSW, Quantization.INT8))
    # Bits take no int8 codes, on either backend; faiss packs 8 bits a byte.
    for backend in Backend:
        with pytest.raises(InvalidSpec, match="int8 does not apply to metric hamming"):
            spec(Kind(backend, Quantization.INT8, bits=True))
    with pytest.raises(InvalidSpec, match="multiple of 8, got 12"):
        IndexSpec("items", 1, 12, Metric.HAMMING, backend=Backend.FAISS)
    assert IndexSpec("items", 1, 12, Metric.HAMMING, backend=Backend.HNSW).dim == 12


def test_a_faiss_rebuild_runs_beside_searches_and_keeps_the_writes_made_meanwhile(data, queries):
    # Each call one chunk, so the rebuild starts after the third call, not inside it.
    whole_calls = GRAPH_ONLY.model_copy(update={"write_chunk": 10_000})
    index = VectorIndex(spec(FAISS, Metric.L2), whole_calls)
    index.upsert(ids(range(1500)), data[:1500])
    # Every item replaced twice: retired ids outnumber live ones, and a rebuild starts.
    index.upsert(ids(range(1500)), data[1500:3000])
    index.upsert(ids(range(1500)), data[3000:4500])
    before = index._graph.size
    # Written while the new graph is built: replayed into it at the swap.
    index.upsert(ids(range(100)), data[4500:4600])
    index.delete(ids(range(100, 200)))
    for q in queries[:50]:
        assert len(index.search(q, 10).hits) == 10  # the old graph serves meanwhile
    wait_until("the rebuilt graph swapped in", lambda: index._graph.size < before, 60)
    # Built from 1,400 or 1,500 live rows (as the build's copy fell before or after the writes
    # above), plus the 100 replayed: at most 1,600 vectors, where the old graph had 4,600.
    assert index._graph.size <= 1600 and index.count == 1400
    for i in (*range(0, 100, 7), *range(200, 1500, 97)):
        vector = data[4500 + i] if i < 100 else data[3000 + i]
        assert index.search(vector, 1).hits[0].id == f"item-{i}"
    assert not {h.id for q in queries for h in index.search(q, 20).hits} & set(ids(range(100, 200)))

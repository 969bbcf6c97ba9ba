"""The filter grammar, attribute indexes, and filtered search (graph and exact)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nrtrec.ann import Strategy
from nrtrec.ann.attributes import AttributeStore
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.errors import InvalidFilter
from nrtrec.schemas.filters import Filter, Op, parse_filter
from nrtrec.schemas.query_api import Metric
from tests.ann.helpers import exact_neighbours, new_index, random_vectors, recall

# ---- grammar -------------------------------------------------------------------------------


def test_the_design_examples_parse():
    f = parse_filter(
        {"category": "toys", "location": {"in": ["US", "CA"]}, "price": {"gte": 10, "lt": 50}}
    )
    assert [(c.attribute, c.op, c.operand) for c in f.conditions] == [
        ("category", Op.EQ, "toys"),
        ("location", Op.IN, ("US", "CA")),
        ("price", Op.GTE, 10.0),
        ("price", Op.LT, 50.0),
    ]


def test_no_filter_is_an_empty_filter():
    assert not parse_filter(None) and not parse_filter({})
    assert parse_filter(Filter()) == Filter()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"price": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"price": {"gte": "ten"}}, "'gte' takes a finite number"),
        ({"price": {"lt": True}}, "'lt' takes a finite number"),
        ({"price": {"lt": float("nan")}}, "'lt' takes a finite number"),
        ({"location": {"in": "US"}}, "'in' takes a list"),
        ({"location": ["US", "CA"]}, "a list needs an operator"),
        ({"location": {}}, "empty condition"),
        ({"aspects": {"eq": {"color": "red"}}}, "compares with strings, numbers"),
        (["category", "toys"], "an object of attribute conditions"),
        ({"": "x"}, "non-empty strings"),
    ],
)
def test_bad_filters_say_what_is_wrong(raw, message):
    with pytest.raises(InvalidFilter, match=message):
        parse_filter(raw)


# ---- matching ------------------------------------------------------------------------------

CATALOGUE = {
    "car": {"category": "toys", "location": "US", "price": 12.5, "new": True},
    "doll": {"category": "toys", "location": "CA", "price": 49.99, "new": False},
    "kite": {"category": "toys", "location": "DE", "price": 50},
    "lamp": {"category": "home", "location": "US", "price": 10},
    "rug": {"category": "home", "price": 200, "tags": ["wool"]},
    "bare": {},
}


@pytest.fixture
def shop():
    index = new_index(4)
    ids = list(CATALOGUE)
    index.upsert(ids, random_vectors(len(ids), 4, seed=7), [CATALOGUE[i] for i in ids])
    return index


def matches(index, raw) -> set[str]:
    return {h.id for h in index.search([1, 0, 0, 0], 100, filter=raw).hits}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"category": "toys"}, {"car", "doll", "kite"}),
        ({"category": {"eq": "home"}}, {"lamp", "rug"}),
        ({"category": {"ne": "toys"}}, {"lamp", "rug"}),
        ({"location": {"in": ["US", "CA"]}}, {"car", "doll", "lamp"}),
        ({"location": {"in": []}}, set()),
        ({"price": {"gte": 10, "lt": 50}}, {"car", "doll", "lamp"}),
        ({"price": {"gt": 10, "lte": 50}}, {"car", "doll", "kite"}),
        ({"price": 50}, {"kite"}),
        ({"price": {"in": [10, 200]}}, {"lamp", "rug"}),
        ({"price": {"ne": 200}}, {"car", "doll", "kite", "lamp"}),
        ({"category": "toys", "location": {"in": ["US", "DE"]}, "price": {"lt": 20}}, {"car"}),
        ({"new": True}, {"car"}),
        ({"new": 1}, set()),
        ({"price": "50"}, set()),
        ({"tags": {"in": ["wool"]}}, set()),
        ({"missing": {"gte": 0}}, set()),
        ({"category": "garden"}, set()),
    ],
)
def test_conditions_select_exactly_the_matching_items(shop, raw, expected):
    assert matches(shop, raw) == expected


# Values a catalogue holds and filters compare with: a few of each kind, so that random filters
# and random items meet often (1 and 1.0 equal; True and 1 do not; "1" is a string).
SCALARS = st.sampled_from([None, True, False, 0, 1, 1.0, 2.5, -3, "1", "a", "b"])
ATTRIBUTES = st.dictionaries(st.sampled_from(["x", "y", "z"]), SCALARS | st.just(["a"]))
NUMBERS = st.sampled_from([-3, 0, 1, 1.5, 2.5])
CONDITIONS = (
    SCALARS
    | st.fixed_dictionaries({"ne": SCALARS})
    | st.fixed_dictionaries({"in": st.lists(SCALARS, max_size=3)})
    | st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), NUMBERS, min_size=1)
)
FILTERS = st.dictionaries(st.sampled_from(["x", "y", "z"]), CONDITIONS, max_size=2)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(ATTRIBUTES, min_size=1, max_size=12), raw=FILTERS)
def test_the_index_and_the_grammar_agree_on_what_a_filter_matches(items, raw):
    """The node's vectorised attribute indexes and ``Filter.matches`` (the app's rule for one
    item) are one semantics: for any catalogue and filter, the same items pass."""
    parsed = parse_filter(raw)
    store = AttributeStore(len(items))
    for row, attributes in enumerate(items):
        store.set(row, attributes)
    assert store.match(parsed).tolist() == [parsed.matches(a) for a in items]
    # The JSON form reads back to the same filter.
    assert parse_filter(parsed.to_json() or {}) == parse_filter(raw)


def test_a_filter_that_matches_nothing_answers_an_empty_list(shop):
    result = shop.search([1, 0, 0, 0], 10, filter={"category": "garden"})
    assert result.hits == [] and result.strategy is Strategy.EMPTY


def test_attributes_follow_upserts_and_deletes(shop):
    shop.upsert(["car"], [[1, 0, 0, 0]], [{"category": "home", "price": 5}])
    assert matches(shop, {"category": "toys"}) == {"doll", "kite"}
    assert matches(shop, {"price": {"lt": 11}}) == {"car", "lamp"}
    shop.delete(["lamp"])
    assert matches(shop, {"category": "home"}) == {"car", "rug"}
    assert matches(shop, {"location": "US"}) == set()


# ---- filtered search quality ---------------------------------------------------------------

N, DIM = 20_000, 32


@pytest.fixture(scope="module")
def data():
    return random_vectors(N, DIM, seed=11)


def _labelled(data, settings: QueryNodeSettings, metric=Metric.L2):
    index = new_index(DIM, metric, settings, max_elements=N)
    rng = np.random.default_rng(12)
    # bucket: 1% of items each; band: 20% each.
    buckets = rng.integers(0, 100, N)
    attrs = [{"bucket": int(b), "band": f"band-{b // 20}"} for b in buckets]
    index.upsert([f"item-{i}" for i in range(N)], data, attrs)
    return index, buckets


def _filtered_recall(index, data, rows, k, raw, expect: Strategy) -> float:
    queries = random_vectors(100, DIM, seed=13)
    truth = exact_neighbours(data[rows], queries, k, index.metric)
    found = []
    for q in queries:
        result = index.search(q, k, filter=raw)
        assert result.strategy is expect
        assert result.candidates == len(rows)
        found.append([h.id for h in result.hits])
    return recall(found, [[f"item-{rows[i]}" for i in row] for row in truth])


@pytest.mark.parametrize("k", [10, 100])
def test_a_one_percent_filter_keeps_recall_through_exact_search(data, k):
    index, buckets = _labelled(data, QueryNodeSettings())
    rows = np.flatnonzero(buckets == 42)
    r = _filtered_recall(index, data, rows, k, {"bucket": 42}, Strategy.EXACT)
    assert r >= 0.95


@pytest.mark.parametrize("k", [10, 100])
def test_a_one_percent_filter_inside_the_graph_still_finds_the_neighbours(data, k):
    # Exact search switched off: the graph walk itself must honour the filter.
    graph_only = QueryNodeSettings(
        exact_search_max_count=0,
        exact_search_max_fraction=0.0,
        exact_search_cost_ratio=0.0,
        max_graph_steps=10**9,
    )
    index, buckets = _labelled(data, graph_only)
    rows = np.flatnonzero(buckets == 42)
    r = _filtered_recall(index, data, rows, k, {"bucket": 42}, Strategy.FILTERED_GRAPH)
    print(f"1% filter, graph only, recall@{k} = {r:.4f}")
    assert r >= 0.95


@pytest.mark.parametrize("k", [10, 100])
def test_a_broad_filter_is_searched_in_the_graph(data, k):
    # The cost model off: the graph walk of a 20 % filter.
    settings = QueryNodeSettings(exact_search_max_count=0, exact_search_cost_ratio=0.0)
    index, buckets = _labelled(data, settings)
    rows = np.flatnonzero(buckets // 20 == 2)
    r = _filtered_recall(index, data, rows, k, {"band": "band-2"}, Strategy.FILTERED_GRAPH)
    print(f"20% filter recall@{k} = {r:.4f}")
    assert r >= 0.95


def test_a_long_graph_walk_goes_exact(data):
    # 20% of items and ef 4000 would walk ~20000 nodes: over a cap of 5000.
    settings = QueryNodeSettings(
        exact_search_max_count=0, max_graph_steps=5000, exact_search_cost_ratio=0.0
    )
    index, _ = _labelled(data, settings)
    result = index.search(data[0], 10, ef=4000, filter={"band": "band-2"})
    assert result.strategy is Strategy.EXACT
    assert index.search(data[0], 10, ef=200, filter={"band": "band-2"}).strategy is (
        Strategy.FILTERED_GRAPH
    )


def test_the_cost_model_searches_a_fifth_exactly_and_four_fifths_in_the_graph(data):
    # 20k items, ef 128 (k=10): exact while candidates < sqrt(50 * 128 * 20000) ~ 11,300.
    index, buckets = _labelled(data, QueryNodeSettings(exact_search_max_count=0))
    fifth = index.search(data[0], 10, filter={"band": "band-2"})
    assert (fifth.strategy, fifth.candidates) == (Strategy.EXACT, int(np.sum(buckets // 20 == 2)))
    rest = index.search(data[0], 10, filter={"band": {"ne": "band-2"}})
    assert rest.strategy is Strategy.FILTERED_GRAPH
    assert rest.candidates == int(np.sum(buckets // 20 != 2))

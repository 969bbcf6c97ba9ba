"""IndexRegistry: versions per name, newest by default, atomic swap, removal."""

from __future__ import annotations

import pytest

from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.query_node import IndexExists, IndexNotFound, IndexRegistry


def spec(name: str = "items", version: int = 1, dim: int = 4) -> IndexSpec:
    return IndexSpec(name=name, model_version=version, dim=dim, metric="cosine")


def test_newest_version_answers_unless_one_is_named():
    registry = IndexRegistry()
    v1, v3 = registry.create(spec(version=1)), registry.create(spec(version=3))
    registry.create(spec("other", 7))
    assert registry.get("items") is v3
    assert registry.get("items", 1) is v1
    assert registry.versions("items") == [1, 3]
    assert [i.spec.key for i in registry] == [("items", 1), ("items", 3), ("other", 7)]


def test_unknown_names_and_versions_are_errors():
    registry = IndexRegistry()
    registry.create(spec())
    with pytest.raises(IndexNotFound, match="'nope' does not exist"):
        registry.get("nope")
    with pytest.raises(IndexNotFound, match="version 2"):
        registry.get("items", 2)


def test_a_version_is_created_once():
    registry = IndexRegistry()
    registry.create(spec())
    with pytest.raises(IndexExists):
        registry.create(spec())
    with pytest.raises(IndexExists):
        registry.add(VectorIndex(spec()))


def test_swap_replaces_an_index_atomically():
    registry = IndexRegistry()
    old = registry.create(spec())
    rebuilt = VectorIndex(spec())
    rebuilt.upsert(["a"], [[1, 0, 0, 0]])
    assert registry.swap(rebuilt) is old
    assert registry.get("items") is rebuilt and len(registry) == 1


def test_remove_one_version_or_all():
    registry = IndexRegistry()
    for v in (1, 2, 3):
        registry.create(spec(version=v))
    assert [i.model_version for i in registry.remove("items", 2)] == [2]
    assert registry.versions("items") == [1, 3]
    assert len(registry.remove("items")) == 2
    with pytest.raises(IndexNotFound):
        registry.remove("items")

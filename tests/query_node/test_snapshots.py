"""Snapshots: round trip, atomic writes, retention, fallback to an older one, offsets."""

from __future__ import annotations

import numpy as np
import pytest

from nrtrec.ann import SnapshotError, SnapshotStore
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.query_node import QueryNode
from tests.ann.helpers import new_index, random_vectors
from tests.query_node.helpers import node_settings


@pytest.fixture
def settings(tmp_path):
    return node_settings(tmp_path)


@pytest.fixture
def index():
    index = new_index(8, "cosine", max_elements=100)
    ids = [f"i{i}" for i in range(300)]
    attrs = [
        {"category": ("toys", "home")[i % 2], "price": i, "aspects": {"colour": ["red"]}}
        for i in range(300)
    ]
    index.upsert(ids, random_vectors(300, 8, seed=21), attrs)
    index.delete([f"i{i}" for i in range(0, 300, 3)])
    return index


def test_a_snapshot_loads_back_equal(tmp_path, index):
    store = SnapshotStore(tmp_path)
    saved = store.save(index, offsets={"item-deltas:0": 41, "item-deltas:1": 7})
    assert saved.path == tmp_path / "items" / "1" / saved.snapshot_id
    assert {p.name for p in saved.path.iterdir()} == {
        "graph.bin",
        "vectors.npy",
        "items.json",
        "meta.json",
    }
    loaded, snapshot = store.load("items", 1)
    assert snapshot == saved and snapshot.offsets == {"item-deltas:0": 41, "item-deltas:1": 7}
    assert loaded.spec == index.spec
    assert loaded.count == index.count == 200 and loaded.capacity == index.capacity
    for item_id in ("i1", "i299"):
        assert loaded.attributes(item_id) == index.attributes(item_id)
        np.testing.assert_array_equal(loaded.vector(item_id), index.vector(item_id))
    assert "i0" not in loaded
    for q in random_vectors(20, 8, seed=22):
        for f in (None, {"category": "toys", "price": {"lt": 150}}):
            assert loaded.search(q, 10, filter=f).hits == index.search(q, 10, filter=f).hits
    # Deleted slots are still free after loading: new items reuse them.
    hnsw_elements = loaded._graph.size
    loaded.upsert([f"n{i}" for i in range(100)], random_vectors(100, 8, seed=23))
    assert loaded._graph.size == hnsw_elements
    assert loaded.search(random_vectors(1, 8, seed=23)[0], 1).hits[0].id == "n0"


def test_only_the_last_few_are_kept_and_no_temporary_is_left(tmp_path, index):
    store = SnapshotStore(tmp_path, QueryNodeSettings(snapshots_keep=2))
    ids = [store.save(index).snapshot_id for _ in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    home = tmp_path / "items" / "1"
    assert sorted(p.name for p in home.iterdir()) == ids[2:]
    assert [s.snapshot_id for s in store.snapshots("items", 1)] == ids[:1:-1]


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path, index):
    store = SnapshotStore(tmp_path)
    older = store.save(index)
    index.upsert(["later"], random_vectors(1, 8))
    newer = store.save(index)
    (newer.path / "graph.bin").write_bytes(b"garbage")
    loaded, snapshot = store.load("items", 1)
    assert snapshot.snapshot_id == older.snapshot_id and "later" not in loaded
    (older.path / "items.json").write_text("{")
    with pytest.raises(SnapshotError, match="no readable snapshot"):
        store.load("items", 1)


def test_a_snapshot_that_reads_but_differs_from_its_checksums_is_not_loaded(tmp_path, index):
    """A bit flipped on disk can still parse; the manifest's sha256 of each file catches it."""
    store = SnapshotStore(tmp_path)
    older = store.save(index)
    index.upsert(["later"], random_vectors(1, 8))
    newer = store.save(index)
    vectors = np.load(newer.path / "vectors.npy")
    vectors[0, 0] += 1.0  # still a valid array of the right shape
    np.save(newer.path / "vectors.npy", vectors)
    loaded, snapshot = store.load("items", 1)
    assert snapshot.snapshot_id == older.snapshot_id and "later" not in loaded
    with pytest.raises(SnapshotError, match="sha256"):
        store.load_path(newer.path)


def test_a_failed_save_leaves_no_partial_snapshot(tmp_path, index, monkeypatch):
    store = SnapshotStore(tmp_path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        store.save(index)
    assert list((tmp_path / "items" / "1").iterdir()) == []
    assert store.keys() == []


def test_the_node_restores_indexes_and_resumes_from_the_smallest_offsets(settings, index):
    node = QueryNode(settings)
    node.registry.add(index)
    # A faiss index comes back as faiss.
    node.create_index("users", 2, 4, "l2", backend="faiss")
    node.snapshot("items", offsets={"item-deltas:0": 50, "item-deltas:1": 9})
    node.snapshot("users", offsets={"item-deltas:0": 40, "item-deltas:2": 3})
    restarted = QueryNode(settings)
    loaded = restarted.restore()
    assert sorted((s.name, s.model_version) for s in loaded) == [("items", 1), ("users", 2)]
    assert restarted.index("items").count == 200 and restarted.index("users").count == 0
    assert restarted.index("users").spec.backend == "faiss"
    assert restarted.offsets == {"item-deltas:0": 40}


def test_close_saves_only_what_changed(settings, index):
    node = QueryNode(settings)
    node.registry.add(index)
    node.close()
    node.close()
    assert len(node.snapshots.snapshots("items", 1)) == 1
    index.delete(["i1"])
    node.close()
    assert len(node.snapshots.snapshots("items", 1)) == 2


def test_dropping_an_index_drops_its_snapshots(settings, index):
    node = QueryNode(settings)
    node.registry.add(index)
    node.snapshot()
    assert node.drop_index("items") == [("items", 1)]
    assert node.snapshots.keys() == []
    assert QueryNode(settings).restore() == []

"""What every user-vector store backend does, checked on each against its real server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest

from nrtrec.core.settings import Settings
from nrtrec.schemas import UserVectors
from nrtrec.user_store import StoreUnavailable, UserVectorStore, open_store
from nrtrec.user_store.couchbase import CouchbaseUserVectorStore
from nrtrec.user_store.redis import RedisUserVectorStore
from tests.conftest import free_port
from tests.user_store.conftest import vec
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MakeStore = Callable[..., UserVectorStore]


def versions(record: UserVectors | None) -> list[int]:
    assert record is not None
    return [v.model_version for v in record.versions]


def recent(store: UserVectorStore, user_id: str) -> list[str]:
    record = store.get(user_id)
    assert record is not None
    return record.recent_items


def test_a_put_reads_back_as_written(store: UserVectorStore) -> None:
    v = vec("u1", 2, value=0.123456789012345678)

    assert store.put(v, recent_items=["i3", "i2"]) is True

    assert store.get("u1") == UserVectors(user_id="u1", versions=[v], recent_items=["i3", "i2"])


def test_an_unknown_user_is_none(store: UserVectorStore) -> None:
    assert store.get("nobody") is None


def test_a_user_id_at_the_longest_an_id_may_be(store: UserVectorStore) -> None:
    # 256 characters of 2 bytes each: past Couchbase's 250-byte key limit.
    user_id = "é" * 256
    store.put(vec(user_id, 1))
    store.put(vec(user_id, 2))
    assert versions(store.get(user_id)) == [2, 1]
    store.delete(user_id)
    assert store.get(user_id) is None


def test_versions_are_kept_newest_first_and_trimmed(store: UserVectorStore) -> None:
    for version in (2, 5, 1):
        assert store.put(vec("u1", version)) is True
    assert versions(store.get("u1")) == [5, 2, 1]

    for version in (4, 3):
        assert store.put(vec("u1", version)) is True
    assert versions(store.get("u1")) == [5, 4, 3]


def test_a_version_older_than_every_kept_one_changes_nothing(store: UserVectorStore) -> None:
    for version in (5, 4, 3):
        store.put(vec("u1", version), recent_items=["a"])
    before = store.get("u1")

    assert store.put(vec("u1", 1, source_ts=9_999), recent_items=["b"]) is False
    assert store.get("u1") == before


def test_a_newer_vector_of_a_version_replaces_it(store: UserVectorStore) -> None:
    store.put(vec("u1", 3, source_ts=100, value=0.1))
    store.put(vec("u1", 2, source_ts=100, value=0.1))
    newer = vec("u1", 3, source_ts=200, value=0.9)

    assert store.put(newer) is True

    record = store.get("u1")
    assert versions(record) == [3, 2]
    assert record is not None and record.newest(3) == newer


def test_a_stale_write_is_ignored(store: UserVectorStore) -> None:
    store.put(vec("u1", 3, source_ts=200, value=0.9), recent_items=["new"])
    before = store.get("u1")

    # Older source_ts for the same version, e.g. a replay from an older checkpoint.
    assert store.put(vec("u1", 3, source_ts=100, value=0.1), recent_items=["old"]) is False

    assert store.get("u1") == before


def test_replaying_a_write_is_idempotent(store: UserVectorStore) -> None:
    v = vec("u1", 3, source_ts=200)
    assert store.put(v, recent_items=["a", "b"]) is True
    once = store.get("u1")

    # Equal source_ts is not stale: applied again (True, refreshing the expiry), same record.
    assert store.put(v, recent_items=["a", "b"]) is True

    assert store.get("u1") == once


def test_recent_items_replaced_when_given_kept_when_none_and_truncated(
    store: UserVectorStore,
) -> None:
    store.put(vec("u1", 1, source_ts=1), recent_items=["a", "b"])
    assert recent(store, "u1") == ["a", "b"]

    store.put(vec("u1", 1, source_ts=2), recent_items=None)
    assert recent(store, "u1") == ["a", "b"]

    store.put(vec("u1", 1, source_ts=3), recent_items=[f"i{n}" for n in range(8)])
    # The store keeps recent_items=5 of them, newest (first) ones.
    assert recent(store, "u1") == ["i0", "i1", "i2", "i3", "i4"]

    store.put(vec("u1", 1, source_ts=4), recent_items=[])
    assert recent(store, "u1") == []


def test_a_new_user_without_recent_items_has_none(store: UserVectorStore) -> None:
    store.put(vec("u1", 1))
    assert recent(store, "u1") == []


def test_delete_forgets_the_user(store: UserVectorStore) -> None:
    store.put(vec("u1", 1))
    store.put(vec("u2", 1))

    store.delete("u1")
    store.delete("never-seen")

    assert store.get("u1") is None
    assert store.get("u2") is not None
    # A deleted user starts over: the first write after the delete is not stale.
    assert store.put(vec("u1", 1, source_ts=1)) is True


def test_a_put_without_create_writes_only_to_a_stored_user(store: UserVectorStore) -> None:
    # A rollout's pass writes a vector of the new version to users it listed; one deleted
    # since must stay deleted.
    assert store.put(vec("gone", 2), create=False) is False
    assert store.get("gone") is None
    assert [ids for ids in store.user_ids() if "gone" in ids] == []

    store.put(vec("here", 1), recent_items=["i1"])
    assert store.put(vec("here", 2), create=False) is True
    assert versions(store.get("here")) == [2, 1]
    assert recent(store, "here") == ["i1"]


def test_popularity_counts_add_up_and_rank(store: UserVectorStore) -> None:
    assert store.popular(10) == []

    store.add_views({"a": 3, "b": 1})
    store.add_views({"b": 4, "c": 2, "z": 0})
    store.add_views({})

    assert store.popular(2) == [("b", 5.0), ("a", 3.0)]
    assert store.popular(10) == [("b", 5.0), ("a", 3.0), ("c", 2.0)]
    assert store.popular(0) == []


def test_popularity_takes_any_item_id_and_big_batches(store: UserVectorStore) -> None:
    odd = ["it`em", "50%", "%60", "x.y", "[0]", "a b", "é", "a:b"]
    store.add_views({item: 7 for item in odd})
    # More items than Couchbase carries in one sub-document call (16).
    store.add_views({f"bulk-{n:02d}": 1 + n for n in range(40)})

    ranked = dict(store.popular(100))

    assert {item: ranked[item] for item in odd} == {item: 7.0 for item in odd}
    assert {item: n for item, n in ranked.items() if item.startswith("bulk-")} == {
        f"bulk-{n:02d}": float(1 + n) for n in range(40)
    }
    assert len(ranked) == len(odd) + 40


# A UTC day number (2024-10-04) for the tests that name the days of their views.
D = 20_000


def test_popularity_counts_the_window_up_to_the_newest_day_only(store: UserVectorStore) -> None:
    store.add_views({"old": 100}, day=D - 40)
    store.add_views({"edge": 5}, day=D - 29)
    # The newest day is D - 29 so far: D - 40 is inside its window.
    assert store.popular(10) == [("old", 100.0), ("edge", 5.0)]

    store.add_views({"new": 1}, day=D)
    # An out-of-window day written late neither counts nor moves the window back.
    store.add_views({"late": 50}, day=D - 31)

    assert store.popular(10) == [("edge", 5.0), ("new", 1.0)]


def test_popularity_of_old_views_only_still_ranks(store: UserVectorStore) -> None:
    # A replayed click stream (MovieLens is 1997-98): the window ends at its newest view.
    store.add_views({"x": 2, "y": 3}, day=10_000)
    store.add_views({"x": 4}, day=9_999)

    assert store.popular(5) == [("x", 6.0), ("y", 3.0)]


def test_popularity_window_setting_is_honoured(make_store: MakeStore) -> None:
    store = make_store(popular_window_days=2)
    store.add_views({"a": 10}, day=D - 2)
    store.add_views({"b": 2}, day=D - 1)
    store.add_views({"c": 1}, day=D)

    assert store.popular(10) == [("b", 2.0), ("c", 1.0)]


def test_popularity_sums_an_items_days(store: UserVectorStore) -> None:
    store.add_views({"a": 1, "c": 4}, day=D - 3)
    store.add_views({"a": 2, "b": 2}, day=D - 1)
    store.add_views({"b": 2}, day=D)

    assert store.popular(10) == [("c", 4.0), ("b", 4.0), ("a", 3.0)]
    assert store.popular(1) == [("c", 4.0)]


def _run_together(workers: int, work: Callable[[int], None]) -> None:
    """``work(i)`` for every worker i, all released at once; re-raises a worker's error."""
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_puts_for_one_user_all_land(make_store: MakeStore) -> None:
    workers, per_worker = 6, 4
    # Each lost race means another put landed, so 24 puts need at most 23 retries each.
    store = make_store(keep_versions=workers * per_worker, write_retries=workers * per_worker)

    def work(i: int) -> None:
        for j in range(per_worker):
            assert store.put(vec("u1", 1 + i * per_worker + j)) is True

    _run_together(workers, work)

    assert versions(store.get("u1")) == list(range(workers * per_worker, 0, -1))


def test_concurrent_views_all_count(store: UserVectorStore) -> None:
    workers, rounds = 6, 10

    def work(i: int) -> None:
        for _ in range(rounds):
            store.add_views({"shared": 1, f"own-{i}": 2})

    _run_together(workers, work)

    ranked = dict(store.popular(100))
    assert ranked == {"shared": float(workers * rounds)} | {
        f"own-{i}": float(2 * rounds) for i in range(workers)
    }


def test_a_record_expires_after_ttl(make_store: MakeStore) -> None:
    store = make_store(ttl_s=2)
    store.put(vec("u1", 1))
    assert store.get("u1") is not None

    # Both servers expire at whole seconds; poll rather than sleep a guessed amount.
    wait_until("the record expires after its ttl_s", lambda: store.get("u1") is None, 30)


def test_ping_answers(store: UserVectorStore) -> None:
    store.ping()


def test_open_store_picks_the_configured_backend(make_settings, backend: str) -> None:
    expected = {"redis": RedisUserVectorStore, "couchbase": CouchbaseUserVectorStore}[backend]
    with open_store(make_settings()) as store:
        assert isinstance(store, expected)


def _unreachable(make_settings: Callable[..., Settings], backend: str) -> Settings:
    """Settings for ``backend`` pointing at a closed port, with short timeouts."""
    settings = make_settings(timeout_s=0.5, connect_timeout_s=1.0)
    port = free_port()
    if backend == "redis":
        redis = settings.redis.model_copy(update={"port": port})
        return settings.model_copy(update={"redis": redis})
    couchbase = settings.couchbase.model_copy(update={"connstr": f"couchbase://127.0.0.1:{port}"})
    return settings.model_copy(update={"couchbase": couchbase})


STORE_CALLS: dict[str, Callable[[UserVectorStore], object]] = {
    "put": lambda s: s.put(vec("u1", 1)),
    "get": lambda s: s.get("u1"),
    "delete": lambda s: s.delete("u1"),
    "add_views": lambda s: s.add_views({"a": 1}),
    "popular": lambda s: s.popular(3),
    "ping": lambda s: s.ping(),
}


@pytest.mark.parametrize("call", sorted(STORE_CALLS))
def test_an_unreachable_backend_raises_store_unavailable(
    make_settings: Callable[..., Settings], backend: str, call: str
) -> None:
    settings = _unreachable(make_settings, backend)
    # Opening may already fail (Couchbase bootstraps eagerly); if not, the call must.
    with pytest.raises(StoreUnavailable), open_store(settings) as store:
        STORE_CALLS[call](store)


def test_user_ids_lists_every_user_of_the_prefix_in_batches(make_store: MakeStore) -> None:
    store = make_store()
    other = make_store(key_prefix=f"other-{uuid.uuid4().hex[:12]}:")
    # The longest ids: 512 bytes (past Couchbase's key limit) and 1024 bytes (at its limit of
    # a sub-document path, before the quotes around it).
    long_ids = ["é" * 256, "\U0001f600" * 256, "\U0001f601" * 256]
    users = [f"u{i}" for i in range(7)] + long_ids + ["with:colon*and?glob[chars]", "50%`x"]
    for user in users:
        store.put(vec(user, 1))
        store.put(vec(user, 2))  # a second write: listed once all the same
    other.put(vec("someone-else", 1))
    store.delete("u3")
    store.delete(long_ids[2])

    batches = list(store.user_ids(batch=3))
    assert all(1 <= len(b) <= 3 for b in batches)
    listed = [u for b in batches for u in b]
    assert sorted(listed) == sorted(set(users) - {"u3", long_ids[2]})
    assert [u for b in other.user_ids() for u in b] == ["someone-else"]


def test_drop_version_removes_an_old_vector_only_when_a_newer_one_is_there(
    store: UserVectorStore,
) -> None:
    store.put(vec("u1", 1, value=0.1), recent_items=["i2", "i1"])
    store.put(vec("u1", 2, value=0.2))
    store.put(vec("u1", 3, value=0.3))
    assert store.drop_version("u1", 2) is True
    record = store.get("u1")
    assert versions(record) == [3, 1] and record is not None
    assert record.recent_items == ["i2", "i1"]
    assert record.newest(3) == vec("u1", 3, value=0.3)
    before = store.get("u1")
    assert store.drop_version("u1", 2) is False  # gone already
    assert store.drop_version("u1", 5) is False  # never there
    assert store.drop_version("u1", 3) is False  # the newest: nothing replaces it
    assert store.get("u1") == before
    assert store.drop_version("u1", 1) is True
    assert store.drop_version("u1", 3) is False  # the only one
    assert store.get("u1") == UserVectors(
        user_id="u1", versions=[vec("u1", 3, value=0.3)], recent_items=["i2", "i1"]
    )
    assert store.drop_version("nobody", 1) is False
    assert store.get("nobody") is None

"""What only the Couchbase backend does: find the local CouchbaseMock with no connstr set, prune
the popularity days no window reads.

Its expiry is checked by the conformance suite through the record disappearing; it is never
read back (``get(with_expiry=True)`` aborts the process on CouchbaseMock).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from couchbase.exceptions import DocumentNotFoundException

from nrtrec.core.settings import Settings
from nrtrec.user_store import StoreUnavailable, UserVectorStore, open_store
from nrtrec.user_store.common import popular_day_key, popular_days_key
from tests.conftest import free_port
from tests.stack import Stack
from tests.user_store.conftest import TEST_TIMEOUTS, vec

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    return "couchbase"


def _without_connstr(settings: Settings, **couchbase: object) -> Settings:
    cb = settings.couchbase.model_copy(update={"connstr": None, **couchbase})
    user_store = settings.user_store.model_copy(update={"backend": "couchbase", **TEST_TIMEOUTS})
    return settings.model_copy(update={"couchbase": cb, "user_store": user_store})


def test_no_connstr_means_the_local_mock(test_settings: Settings, stack: Stack) -> None:
    if stack.docker:
        pytest.skip("the Docker stack runs Couchbase Server, not the local runner's mock")
    stack.couchbase()  # started by the local runner on test_settings' control port
    with open_store(_without_connstr(test_settings)) as store:
        store.put(vec("mock-discovery-user", 1))
        assert store.get("mock-discovery-user") is not None
        store.delete("mock-discovery-user")


def test_no_connstr_and_no_mock_is_unavailable(test_settings: Settings) -> None:
    settings = _without_connstr(test_settings, control_port=free_port())
    with pytest.raises(StoreUnavailable, match=r"no couchbase\.connstr configured"):
        open_store(settings)


def test_a_newer_day_prunes_the_days_before_its_window(
    make_store: Callable[..., UserVectorStore], key_prefix: str
) -> None:
    store = make_store(popular_window_days=3)
    store.add_views({"a": 1}, day=100)
    store.add_views({"a": 2}, day=107)
    store.add_views({"a": 4}, day=110)

    # The store's own bucket: the days and their documents are not visible otherwise.
    collection = store._collection  # type: ignore[attr-defined]
    assert collection.get(popular_days_key(key_prefix)).content_as[dict] == {"110": 1}
    for day in (100, 107):
        with pytest.raises(DocumentNotFoundException):
            collection.get(popular_day_key(key_prefix, day))
    assert store.popular(5) == [("a", 4.0)]

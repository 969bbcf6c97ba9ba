"""What only the Couchbase backend does: find the local CouchbaseMock with no connstr set.

Its expiry is checked by the conformance suite through the record disappearing; it is never
read back (``get(with_expiry=True)`` aborts the process on CouchbaseMock).
"""

from __future__ import annotations

import pytest

from nrtrec.core.settings import Settings
from nrtrec.user_store import StoreUnavailable, open_store
from tests.conftest import free_port
from tests.stack import Stack
from tests.user_store.conftest import TEST_TIMEOUTS, vec

pytestmark = pytest.mark.integration


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

"""Stores of every backend, on the real services of the session ``stack``.

Each test gets a key prefix of its own, so tests share one Redis and one Couchbase bucket
without seeing each other's users or popularity counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from nrtrec.core.settings import RedisSettings, Settings, UserStoreSettings
from nrtrec.schemas import UserVector
from nrtrec.user_store import UserVectorStore, open_store
from tests.stack import Stack

BACKENDS = ["redis", "couchbase"]

# The machine is shared and loaded: generous bounds, so a slow moment is not a failure.
TEST_TIMEOUTS: dict[str, Any] = {"timeout_s": 5.0, "connect_timeout_s": 20.0}


def backend_settings(base: Settings, stack: Stack, backend: str, **user_store: Any) -> Settings:
    """``base`` with ``backend`` selected and pointed at the stack's server for it."""
    fields = {**base.user_store.model_dump(), **TEST_TIMEOUTS, "backend": backend, **user_store}
    update: dict[str, Any] = {"user_store": UserStoreSettings.model_validate(fields)}
    if backend == "redis":
        url = urlparse(stack.redis())
        update["redis"] = RedisSettings(host=url.hostname or "127.0.0.1", port=url.port or 6379)
    elif backend == "couchbase":
        endpoint = stack.couchbase()
        update["couchbase"] = base.couchbase.model_copy(
            update={
                "connstr": endpoint.connstr,
                "bucket": endpoint.bucket,
                "username": endpoint.username,
                "password": endpoint.password,
            }
        )
    return base.model_copy(update=update)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def key_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_settings(
    test_settings: Settings, stack: Stack, backend: str, key_prefix: str
) -> Callable[..., Settings]:
    """Settings for this test's backend and prefix; keywords override ``user_store`` fields."""

    def make(**user_store: Any) -> Settings:
        return backend_settings(
            test_settings, stack, backend, **{"key_prefix": key_prefix, **user_store}
        )

    return make


@pytest.fixture
def make_store(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., UserVectorStore]]:
    """Opens stores like ``open_store`` does and closes them after the test."""
    opened: list[UserVectorStore] = []

    def make(**user_store: Any) -> UserVectorStore:
        store = open_store(make_settings(**user_store))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., UserVectorStore]) -> UserVectorStore:
    """keep_versions 3, recent_items 5: small enough for tests to reach both limits."""
    return make_store(keep_versions=3, recent_items=5)


def vec(user_id: str, model_version: int, source_ts: int = 1_000, value: float = 0.5) -> UserVector:
    """A small user vector whose content tells versions and writes apart."""
    return UserVector(
        user_id=user_id,
        model_version=model_version,
        vector=[value, -value, 1.0 / 3.0],
        source_ts=source_ts,
        updated_ts=source_ts + 7,
    )

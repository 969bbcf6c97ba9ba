"""What only the Redis backend can show: the expiry it sets, how it reports a bad record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from nrtrec.core.settings import Settings
from nrtrec.user_store import StoreError, UserVectorStore, open_store
from nrtrec.user_store.common import popular_day_key, popular_days_key, user_key
from tests.user_store.conftest import vec

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    return "redis"


@pytest.fixture
def raw(make_settings: Callable[..., Settings]):
    client = redis.Redis.from_url(make_settings().redis.url)
    yield client
    client.close()


def test_every_write_sets_the_expiry(make_settings, raw, key_prefix: str) -> None:
    with open_store(make_settings(ttl_s=3600)) as store:
        store.put(vec("u1", 1))
        raw.persist(user_key(key_prefix, "u1"))
        store.put(vec("u1", 2))
    assert 0 < raw.ttl(user_key(key_prefix, "u1")) <= 3600


def test_no_ttl_means_no_expiry(make_settings, raw, key_prefix: str) -> None:
    with open_store(make_settings(ttl_s=None)) as store:
        store.put(vec("u1", 1))
    assert raw.ttl(user_key(key_prefix, "u1")) == -1


def test_a_record_that_is_not_user_vectors_is_a_store_error(
    store: UserVectorStore, raw, key_prefix: str
) -> None:
    raw.set(user_key(key_prefix, "u1"), b'{"user_id": "u1"}')
    with pytest.raises(StoreError, match="invalid record for user 'u1'"):
        store.get("u1")
    with pytest.raises(StoreError, match="invalid record"):
        store.put(vec("u1", 1))


def test_a_days_views_expire_and_days_before_the_window_are_forgotten(
    make_settings, raw, key_prefix: str
) -> None:
    with open_store(make_settings(popular_window_days=3)) as store:
        store.add_views({"a": 1}, day=100)
        store.add_views({"a": 1}, day=110)
        assert store.popular(5) == [("a", 1.0)]
    assert 0 < raw.ttl(popular_day_key(key_prefix, 110)) <= 5 * 86_400
    assert 0 < raw.ttl(popular_days_key(key_prefix)) <= 5 * 86_400
    assert raw.zrange(popular_days_key(key_prefix), 0, -1) == [b"110"]
    # popular()'s scratch key went with its transaction.
    assert raw.keys(f"{key_prefix}popular:scratch*") == []

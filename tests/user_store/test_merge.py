"""The merge rule of a put and the backend choice, without a server."""

from __future__ import annotations

import pytest

from nrtrec.core.settings import Settings, UserStoreSettings
from nrtrec.user_store import open_store
from nrtrec.user_store.common import merge
from nrtrec.user_store.couchbase import _field_name, _field_path
from tests.user_store.conftest import vec

CFG = UserStoreSettings(keep_versions=2, recent_items=3)


def test_a_first_write_makes_the_record() -> None:
    record = merge(None, vec("u", 1), ["a", "b", "c", "d"], CFG)
    assert record is not None
    assert record.versions == [vec("u", 1)]
    assert record.recent_items == ["a", "b", "c"]


def test_stale_and_trimmed_writes_change_nothing() -> None:
    stored = merge(None, vec("u", 3, source_ts=50), ["a"], CFG)
    stored = merge(stored, vec("u", 2, source_ts=50), None, CFG)
    assert stored is not None and [v.model_version for v in stored.versions] == [3, 2]

    assert merge(stored, vec("u", 3, source_ts=49), ["x"], CFG) is None
    assert merge(stored, vec("u", 1, source_ts=99), ["x"], CFG) is None
    # Equal source_ts is a replay, applied again.
    assert merge(stored, vec("u", 3, source_ts=50), None, CFG) == stored


def test_open_store_rejects_an_unknown_backend() -> None:
    settings = Settings()
    # The settings model refuses it; model_copy skips validation, as hand-built settings might.
    user_store = settings.user_store.model_copy(update={"backend": "memcached"})
    with pytest.raises(ValueError, match="memcached"):
        open_store(settings.model_copy(update={"user_store": user_store}))


def test_recent_items_setting_is_capped_by_the_record_schema() -> None:
    with pytest.raises(ValueError):
        UserStoreSettings(recent_items=1001)


@pytest.mark.parametrize("item_id", ["plain", "it`em", "50%", "%60", "%2560", "``", "x.y"])
def test_popularity_field_names_round_trip_without_backticks_inside(item_id: str) -> None:
    path = _field_path(item_id)
    inner = path[1:-1]
    assert path == f"`{inner}`" and "`" not in inner
    assert _field_name(inner) == item_id

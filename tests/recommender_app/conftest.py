"""Fixtures of the recommender app's tests: one query-node cluster with the catalogue loaded
for the session (tests that stop nodes start their own), the real Redis of the stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nrtrec.core.settings import Settings
from nrtrec.user_store import UserVectorStore, open_store
from tests.recommender_app.cluster import (
    Catalogue,
    Cluster,
    load_catalogue,
    make_catalogue,
    start_cluster,
    store_settings,
)


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return make_catalogue()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, catalogue: Catalogue) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("app-cluster"))
    try:
        load_catalogue(c.gateway.url, catalogue)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def redis_url(stack) -> str:
    return stack.redis()


@pytest.fixture(params=["shards", "gateway"], ids=["reads-shards", "reads-gateway"])
def settings(request: pytest.FixtureRequest, redis_url: str, cluster: Cluster) -> Settings:
    """A key prefix of its own per test: users and popular items start empty. Each test runs
    twice: the app reading from the shards itself (its own fan-out, as under ``nrtrec up``)
    and through the gateway. Generous timeouts: these tests check answers, not timing, on a
    machine others share (the degradation tests set tight ones)."""
    return store_settings(
        redis_url,
        gateway_url=cluster.gateway.url,
        shards=cluster.shard_urls() if request.param == "shards" else None,
        popular_refresh_s=0.2,
        fresh_refresh_s=0.2,
        versions_ttl_s=0.2,
        store_timeout_s=2.0,
        search_timeout_s=2.0,
        deadline_s=5.0,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[UserVectorStore]:
    with open_store(settings) as s:
        yield s

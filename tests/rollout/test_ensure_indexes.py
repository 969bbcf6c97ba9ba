"""``nrtrec up``'s index step (``cli.up.ensure_indexes``) on real query nodes and a gateway: a
new deployment serves every version; on a deployment that serves one, a version new to the
indexes (trained since) is created building, for ``nrtrec models rollout`` to finish; a
repeated ``nrtrec up`` changes no state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nrtrec.cli.up import ensure_indexes
from nrtrec.core.settings import GatewaySettings, Settings
from tests.recommender_app.cluster import TOKEN, Cluster, start_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("ensure-indexes"))
    try:
        yield c
    finally:
        c.close()


def states(cluster: Cluster, name: str) -> dict[int, bool]:
    listing = httpx.get(f"{cluster.gateway.url}/v1/indexes", timeout=10).json()
    return {i["model_version"]: i["serving"] for i in listing if i["name"] == name}


def test_only_a_new_deployment_serves_new_versions_at_once(cluster: Cluster, tmp_path: Path):
    name = f"items-{uuid.uuid4().hex[:6]}"
    base = Settings(run_dir=tmp_path, token=TOKEN)
    settings = base.model_copy(
        update={
            "gateway": GatewaySettings(client_url=cluster.gateway.url),
            "query_node": base.query_node.model_copy(update={"index_name": name}),
        }
    )
    ensure_indexes(settings, [1, 2])
    assert states(cluster, name) == {1: True, 2: True}
    ensure_indexes(settings, [1, 2, 3])
    assert states(cluster, name) == {1: True, 2: True, 3: False}
    ensure_indexes(settings, [1, 2, 3])  # nrtrec up again, before the rollout
    assert states(cluster, name) == {1: True, 2: True, 3: False}
    httpx.delete(
        f"{cluster.gateway.url}/v1/indexes/{name}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).raise_for_status()

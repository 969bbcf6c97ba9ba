"""``nrtrec app --shard URL ... --num-partitions N``: the app reads from the shards named on its
command line with its own fan-out. Its gateway URL points nowhere, so an answer from the index
can only have come from the shards."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import free_port
from tests.recommender_app.cluster import PARTITIONS, start

pytestmark = pytest.mark.integration


def test_the_app_reads_the_shards_its_command_line_names(
    tmp_path, redis_url, cluster, catalogue
) -> None:
    redis = urlparse(redis_url)
    env = {
        "NRTREC_REDIS__HOST": redis.hostname or "127.0.0.1",
        "NRTREC_REDIS__PORT": str(redis.port or 6379),
        "NRTREC_USER_STORE__KEY_PREFIX": f"command-{tmp_path.name}:",
        "NRTREC_LOG_FORMAT": "text",
    }
    args = ["app", "--gateway-url", f"http://127.0.0.1:{free_port()}"]
    args += ["--num-partitions", str(PARTITIONS)]
    for (url,) in cluster.shard_urls():
        args += ["--shard", url]
    server = start("app", tmp_path, args, env)
    try:
        server.wait_healthy()
        # One more than needed: test_app's escaping test may have left its "evil" item.
        body = httpx.get(f"{server.url}/v1/items/12/similar?k=6", timeout=10).json()
    finally:
        server.stop()
    assert body["source"] == "personalized", body
    assert not body["degraded"], body
    vector = catalogue.vectors[2][catalogue.ids.index("12")]
    ids = [i["id"] for i in body["items"] if i["id"] != "evil"][:5]
    assert ids == catalogue.exact(2, vector, 6)[1:]

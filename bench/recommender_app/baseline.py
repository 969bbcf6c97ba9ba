"""Section ``baseline``: each user's request through every path in turn (the order rotating),
one at a time; every timing of the load sections is set against these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import percentiles, timed_rounds
from bench.recommender_app.data import Data
from bench.recommender_app.load import ms_stats, server_timing
from bench.recommender_app.params import INDEX, MODEL_VERSION, STAGES, Params
from bench.recommender_app.stack import Stack
from nrtrec.user_store import UserVectorStore


def section_baseline(p: Params, stack: Stack, store: UserVectorStore, data: Data) -> dict:
    app = httpx.Client(base_url=stack.apps["shards"].url, trust_env=False, timeout=10)
    via_gateway = httpx.Client(base_url=stack.apps["gateway"].url, trust_env=False, timeout=10)
    no_fresh = httpx.Client(base_url=stack.apps["shards_no_fresh"].url, trust_env=False, timeout=10)
    gateway = httpx.Client(base_url=stack.gateway.url, trust_env=False, timeout=10)
    node = httpx.Client(base_url=stack.nodes[0].url, trust_env=False, timeout=10)
    split: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    sources: Counter[str] = Counter()

    def search_body(u: int) -> dict:
        # What the app sends: k plus the recent items it will drop, with attributes.
        return {
            "vector": data.user_vectors[u].tolist(),
            "k": p.k + p.recent,
            "model_version": MODEL_VERSION,
            "include_attributes": True,
        }

    def call_app(client: httpx.Client, u: int, record: bool) -> None:
        r = client.get(f"/v1/users/{data.user_ids[u]}/recommendations", params={"k": p.k})
        r.raise_for_status()
        if record:
            sources[r.json()["source"]] += 1
            for name, ms in server_timing(r.headers["Server-Timing"]).items():
                split[name].append(ms)

    paths: dict[str, Callable[[int], Any]] = {
        "app": lambda u: call_app(app, u, True),
        "app_without_fresh_boost": lambda u: call_app(no_fresh, u, False),
        "app_via_gateway": lambda u: call_app(via_gateway, u, False),
        "app_healthz": lambda u: app.get("/healthz").raise_for_status(),
        "gateway_search": lambda u: gateway.post(
            f"/v1/indexes/{INDEX}/search", json=search_body(u)
        ).raise_for_status(),
        "node_search": lambda u: node.post(
            f"/v1/indexes/{INDEX}/search", json=search_body(u)
        ).raise_for_status(),
        "store_get": lambda u: store.get(data.user_ids[u]),
    }
    n = min(p.baseline_queries, p.users)

    def forget_warmup() -> None:
        for values in split.values():
            values.clear()
        sources.clear()

    times, _ = timed_rounds(paths, n, p.warmup, after_warmup=forget_warmup)
    for client in (app, no_fresh, via_gateway, gateway, node):
        client.close()
    out: dict[str, Any] = {"requests": n, "sources": dict(sources)}
    for name in paths:
        out[name] = percentiles(times[name])
    # The Server-Timing split of the app that reads the shards itself.
    out["app_split_ms"] = {s: ms_stats(v) for s, v in split.items()}
    base = out["app"]["p95_ms"]
    out["ratios_to_app_p95"] = {name: out[name]["p95_ms"] / base for name in paths}
    return out

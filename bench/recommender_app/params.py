"""The benchmark's constants and the command line's choices."""

from __future__ import annotations

from dataclasses import dataclass

INDEX = "items"
MODEL_VERSION = 1
TOKEN = "bench-token"
KEY_PREFIX = "bench:"
# DESIGN / the serving-speed issue: p95 on the serving path alone, and with the pipeline running.
TARGET_P95_MS = 25.0
TARGET_PIPELINE_P95_MS = 50.0
TARGET_PIPELINE_RATE = 100.0
CATEGORIES = ("Comedy", "Drama", "Action", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation")
# How each app reads (app.query_path): the shards itself, or through the gateway; and the app
# that reads the shards without the fresh boost (app.fresh_boost 0: no fresh pool), to price it.
APP_PATHS = ("shards", "gateway", "shards_no_fresh")
# Share of the catalogue listed within app.fresh_listing_s (the rest a year ago): the fresh
# pool's listings, as a shop's new listings of the last week.
FRESH_SHARE = 0.02
BASELINE_PATHS = (
    "app",
    "app_without_fresh_boost",
    "app_via_gateway",
    "app_healthz",
    "gateway_search",
    "node_search",
    "store_get",
)
LABELS = {
    "app": "app\n(reads shards)",
    "app_without_fresh_boost": "app, no fresh\nboost",
    "app_via_gateway": "app\n(via gateway)",
    "app_healthz": "app\n/healthz",
    "gateway_search": "gateway\nsearch",
    "node_search": "one query node\nsearch",
    "store_get": "store get\n(in-process)",
}
STAGES = ("store", "search", "app")


@dataclass(frozen=True)
class Params:
    items: int
    dim: int
    users: int
    recent: int
    shards: int
    k: int
    rates: tuple[float, ...]
    seconds: float
    workers: int
    baseline_queries: int
    warmup: int
    seed: int
    pipeline: bool
    pipeline_rates: tuple[float, ...]
    pipeline_click_rate: float
    pipeline_seconds: float

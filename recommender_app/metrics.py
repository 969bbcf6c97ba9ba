"""Prometheus metrics of one app, in its own registry (two apps in one process do not collide)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from nrtrec.core.heap import GcPauses

if TYPE_CHECKING:
    from nrtrec.query_node.client import Attempt

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# A user vector's age at serving time: from seconds (a click just made) to a month.
AGE_BUCKETS = (1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
# Cosine similarity of the best hit.
SCORE_BUCKETS = tuple(round(-0.2 + 0.1 * i, 1) for i in range(13))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "nrtrec_app_request_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc = GcPauses(self.registry, "nrtrec_app")
        self.stage_seconds = Histogram(
            "nrtrec_app_stage_seconds",
            "Time of a request spent on the store and on the gateway (search, listing, look-up)",
            ["endpoint", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "nrtrec_app_answers",
            "Answers by endpoint, by the path they took (personalized, older-version, popular) "
            "and by the model version that served them (none for popular items)",
            ["endpoint", "source", "model_version"],
            registry=self.registry,
        )
        self.user_vector_age = Histogram(
            "nrtrec_app_user_vector_age_seconds",
            "Age of the user vector a recommendation was searched with (since its newest click)",
            ["model_version"],
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )
        self.top_score = Histogram(
            "nrtrec_app_top_score",
            "Score of the best hit of a personalized answer, by model version (a drift signal)",
            ["endpoint", "model_version"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "nrtrec_app_degraded",
            "Degraded answers by endpoint and reason (store_unavailable, search_unavailable, ...)",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "nrtrec_app_events",
            "Click events by outcome: published, spooled (the broker was late), failed",
            ["outcome"],
            registry=self.registry,
        )
        self.impressions = Counter(
            "nrtrec_app_impressions",
            "Served lists logged to the impressions topic, by experiment arm and outcome: "
            "delivered, spooled (the broker did not take it in time), dropped (backlog full)",
            ["arm", "outcome"],
            registry=self.registry,
        )

        # Only when the app fans out over the shards itself (app.query_path).
        self.upstream_failures = Counter(
            "nrtrec_app_upstream_failures",
            "Failed calls to a query-node replica, by shard and kind (timeout, unavailable, ...)",
            ["shard", "kind"],
            registry=self.registry,
        )
        self.partial_searches = Counter(
            "nrtrec_app_partial_searches",
            "Searches answered without some shard, by the shard that was missing",
            ["index", "shard"],
            registry=self.registry,
        )

    def upstream_failure(self, shard: int, attempt: Attempt) -> None:
        self.upstream_failures.labels(str(shard), attempt.kind).inc()

    def partial_search(self, index: str, shard: int) -> None:
        self.partial_searches.labels(index, str(shard)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

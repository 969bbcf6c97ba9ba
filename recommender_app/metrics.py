"""Prometheus metrics of one app, in its own registry (two apps in one process do not collide)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

if TYPE_CHECKING:
    from nrtrec.query_node.client import Attempt

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


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
        self.stage_seconds = Histogram(
            "nrtrec_app_stage_seconds",
            "Time of a request spent on the store and on the gateway (search, listing, look-up)",
            ["endpoint", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "nrtrec_app_answers",
            "Answers by endpoint and by the path they took (personalized, older-version, popular)",
            ["endpoint", "source"],
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

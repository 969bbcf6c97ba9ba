"""Prometheus metrics of one app, in its own registry (two apps in one process do not collide)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            "Click events by outcome (published, failed)",
            ["outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every HTTP request under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so probes cannot grow the series without bound.
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - start
            )

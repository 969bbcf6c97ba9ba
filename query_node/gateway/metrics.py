"""Prometheus metrics of one gateway app, in its own registry (see ``query_node.http.metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nrtrec.core.heap import GcPauses
from nrtrec.query_node.fanout import Attempt, Shard
from nrtrec.query_node.http.metrics import LATENCY_BUCKETS


class GatewayMetrics:
    def __init__(self, shards: list[Shard]):
        self.registry = CollectorRegistry()
        # The name LatencyMiddleware records into.
        self.request_seconds = Histogram(
            "nrtrec_gateway_request_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc = GcPauses(self.registry, "nrtrec_gateway")
        self.upstream_failures = Counter(
            "nrtrec_gateway_upstream_failures",
            "Failed calls to a replica, by shard and kind (timeout, unavailable, bad_gateway)",
            ["shard", "kind"],
            registry=self.registry,
        )
        self.partial_searches = Counter(
            "nrtrec_gateway_partial_searches",
            "Searches answered without some shard, by the shard that was missing",
            ["index", "shard"],
            registry=self.registry,
        )
        self.registry.register(_ReplicaHealth(shards))

    def failure(self, shard: int, attempt: Attempt) -> None:
        self.upstream_failures.labels(str(shard), attempt.kind).inc()

    def partial(self, index: str, shard: int) -> None:
        self.partial_searches.labels(index, str(shard)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ReplicaHealth(Collector):
    def __init__(self, shards: list[Shard]):
        self._shards = shards

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "nrtrec_gateway_replica_up", "1 when a replica is marked up", labels=["shard", "url"]
        )
        for shard in self._shards:
            for replica in shard.replicas:
                up.add_metric([str(shard.index), replica.url], 1.0 if replica.up else 0.0)
        yield up

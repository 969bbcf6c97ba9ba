"""Prometheus metrics of one app: request latency by route, searches by strategy, index sizes.

Each app has its own ``CollectorRegistry``, so two apps in one process (tests, a gateway beside a
node) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nrtrec.core.heap import GcPauses
from nrtrec.query_node.registry import IndexRegistry

# Sub-millisecond buckets: an in-memory search is well under 1 ms.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class Metrics:
    def __init__(self, indexes: IndexRegistry):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "nrtrec_query_node_request_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.searches = Counter(
            "nrtrec_query_node_searches",
            "Searches by index and by how they were answered (graph, filtered_graph, exact, empty)",
            ["index", "strategy"],
            registry=self.registry,
        )
        self.registry.register(_IndexSizes(indexes))
        self.gc = GcPauses(self.registry, "nrtrec_query_node")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _IndexSizes(Collector):
    """Read at scrape time, so the gauges never lag the indexes."""

    def __init__(self, indexes: IndexRegistry):
        self._indexes = indexes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily(
            "nrtrec_query_node_index_items", "Items in an index", labels=["index", "model_version"]
        )
        capacity = GaugeMetricFamily(
            "nrtrec_query_node_index_capacity",
            "Rows allocated in an index (it grows when full)",
            labels=["index", "model_version"],
        )
        for index in self._indexes:
            labels = [index.name, str(index.model_version)]
            items.add_metric(labels, index.count)
            capacity.add_metric(labels, index.capacity)
        yield items
        yield capacity

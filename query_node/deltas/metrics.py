"""Prometheus metrics of the ``item-deltas`` consumer, in the node app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Produce-to-apply delay of a delta (its source_ts to its apply).
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class DeltaMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.applied = Counter(
            "nrtrec_query_node_deltas_applied",
            "Item deltas applied to an index, by op",
            ["op"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "nrtrec_query_node_deltas_dead_lettered",
            "Item deltas sent to dead-letters, by reason",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "nrtrec_query_node_deltas_skipped",
            "Item deltas not applied on purpose: held by a restored snapshot, or of a dropped "
            "index version",
            registry=registry,
        )
        self.delay = Histogram(
            "nrtrec_query_node_delta_delay_seconds",
            "From a delta's source_ts to its apply",
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.freshness = Gauge(
            "nrtrec_query_node_delta_lag_seconds",
            "Apply time minus source_ts of the last applied delta",
            registry=registry,
        )
        self.lag = Gauge(
            "nrtrec_query_node_delta_consumer_lag",
            "Records of item-deltas not applied yet, by partition",
            ["partition"],
            registry=registry,
        )

"""One module per service the local runner starts."""

from __future__ import annotations

from nrtrec.core.settings import Settings
from nrtrec.deploy.services.app import AppService
from nrtrec.deploy.services.base import Process, Service
from nrtrec.deploy.services.couchbase import CouchbaseService
from nrtrec.deploy.services.flink import FlinkService
from nrtrec.deploy.services.kafka import KafkaService
from nrtrec.deploy.services.prometheus import PrometheusService
from nrtrec.deploy.services.query_nodes import GatewayService, QueryNodeService
from nrtrec.deploy.services.redis import RedisService
from nrtrec.deploy.services.triton import TritonService

SERVICE_TYPES: dict[str, type[Service]] = {
    s.name: s for s in (KafkaService, FlinkService, TritonService, RedisService, CouchbaseService)
}


def default_services(settings: Settings) -> list[Service]:
    """Everything `nrtrec up` starts, in start order: infrastructure, then query nodes (one
    per shard replica), the gateway in front of them, the recommender app, and Prometheus
    scraping all of them.

    The Couchbase test server only when it is the store (``user_store.backend``): it binds its
    REST port on every interface, with fixed credentials, and nothing else needs it."""
    infrastructure = [
        cls(settings)
        for cls in SERVICE_TYPES.values()
        if cls is not CouchbaseService or settings.user_store.backend == "couchbase"
    ]
    local = settings.local
    nodes = [
        QueryNodeService(settings, n)
        for n in range(local.query_node_shards * local.query_node_replicas)
    ]
    services = [*infrastructure, *nodes, GatewayService(settings), AppService(settings)]
    return [*services, PrometheusService(settings)]


__all__ = ["SERVICE_TYPES", "Process", "Service", "default_services"]

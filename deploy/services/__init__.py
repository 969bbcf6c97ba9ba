"""One module per service the local runner starts."""

from __future__ import annotations

from nrtrec.deploy.services.base import Process, Service
from nrtrec.deploy.services.couchbase import CouchbaseService
from nrtrec.deploy.services.flink import FlinkService
from nrtrec.deploy.services.kafka import KafkaService
from nrtrec.deploy.services.redis import RedisService
from nrtrec.deploy.services.triton import TritonService
from nrtrec.settings import Settings

SERVICE_TYPES: dict[str, type[Service]] = {
    s.name: s for s in (KafkaService, FlinkService, TritonService, RedisService, CouchbaseService)
}


def default_services(settings: Settings) -> list[Service]:
    """Every infrastructure service, in start order."""
    return [cls(settings) for cls in SERVICE_TYPES.values()]


__all__ = ["SERVICE_TYPES", "Process", "Service", "default_services"]

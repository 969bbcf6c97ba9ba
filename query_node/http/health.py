"""Liveness and Prometheus metrics; both open."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from nrtrec.query_node.http.deps import Node, NodeMetrics
from nrtrec.schemas.query_api import NodeHealth

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(node: Node) -> NodeHealth:
    # node.offsets is replaced whole, never changed in place: reading it needs no lock.
    return NodeHealth(status="ok", indexes=len(node.registry), offsets=node.offsets)


@router.get("/metrics")
def metrics(metrics: NodeMetrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

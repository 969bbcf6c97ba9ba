"""Liveness and Prometheus metrics; both open."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from nrtrec.query_node.http.deps import Node, NodeMetrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(node: Node) -> dict[str, object]:
    return {"status": "ok", "indexes": len(node.registry)}


@router.get("/metrics")
def metrics(metrics: NodeMetrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

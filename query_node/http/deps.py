"""What handlers receive by injection: the node and the metrics the lifespan set up."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from nrtrec.query_node.declarations import Declarations
from nrtrec.query_node.http.auth import require_token
from nrtrec.query_node.http.metrics import Metrics
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas.query_api import INDEX_NAME_PATTERN


# async: FastAPI would run a plain function in the thread pool, a hop per dependency.
async def _node(request: Request) -> QueryNode:
    return request.state.node


async def _metrics(request: Request) -> Metrics:
    return request.state.metrics


async def _declarations(request: Request) -> Declarations | None:
    return request.state.declarations


Node = Annotated[QueryNode, Depends(_node)]
NodeMetrics = Annotated[Metrics, Depends(_metrics)]
# None on a node that does not follow Kafka: its indexes are its own.
NodeDeclarations = Annotated[Declarations | None, Depends(_declarations)]
IndexNameParam = Annotated[str, Path(pattern=INDEX_NAME_PATTERN, description="index name")]
TOKEN_REQUIRED = [Depends(require_token)]

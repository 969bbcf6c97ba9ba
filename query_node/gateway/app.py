"""The gateway's app factory: the query node's HTTP API (DESIGN.md) over several shards.

Same paths, bodies, errors and token rule as a node (``nrtrec.query_node.http``); a search answer
adds ``partial`` and ``failed_shards``. ``GET /healthz`` reports every replica as the background
health checks see it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, TypedDict

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic_core import from_json, to_json

from nrtrec.core.heap import serving_heap
from nrtrec.core.settings import Settings
from nrtrec.core.web.limits import BodyLimitMiddleware
from nrtrec.core.web.timing import LatencyMiddleware
from nrtrec.query_node.fanout import FanOutError, ShardRejected
from nrtrec.query_node.gateway.service import Gateway
from nrtrec.query_node.http import errors
from nrtrec.query_node.http.auth import token_dependency
from nrtrec.query_node.http.deps import IndexNameParam
from nrtrec.schemas.query_api import (
    CreateIndexRequest,
    DeleteRequest,
    DropResult,
    IndexInfo,
    ItemsRequest,
    ItemsResponse,
    PromoteRequest,
    SearchRequest,
    SearchResponse,
    SnapshotResult,
    UpsertRequest,
    WriteResult,
)

log = logging.getLogger(__name__)

FAILED_SHARDS_HEADER = "X-Nrtrec-Failed-Shards"


class State(TypedDict):
    gateway: Gateway


async def _gateway(request: Request) -> Gateway:
    return request.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
VersionQuery = Annotated[int | None, Query(ge=1, description="absent: every version")]
TOKEN_REQUIRED = [
    Depends(token_dependency(lambda request: request.state.gateway.settings.token, "gateway"))
]

health = APIRouter(tags=["health"])
indexes = APIRouter(prefix="/v1/indexes", tags=["indexes"])


@health.get("/healthz")
async def healthz(gateway: GatewayDep) -> dict[str, object]:
    """``ok`` when every shard has a replica up, else ``degraded`` (searches are partial)."""
    return gateway.health()


@health.get("/metrics")
async def metrics(gateway: GatewayDep) -> Response:
    return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@indexes.get("")
async def list_indexes(gateway: GatewayDep, response: Response) -> list[IndexInfo]:
    """Counts summed over shards; a shard that did not answer is named in the
    ``X-Nrtrec-Failed-Shards`` header."""
    merged, failed = await gateway.list_indexes()
    if failed:
        response.headers[FAILED_SHARDS_HEADER] = ",".join(map(str, failed))
    return [IndexInfo(**entry) for entry in merged]


@indexes.put(
    "/{name}",
    dependencies=TOKEN_REQUIRED,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "exists already with this spec on every replica"}},
)
async def create_index(
    name: IndexNameParam, body: CreateIndexRequest, gateway: GatewayDep, response: Response
) -> IndexInfo:
    info, created = await gateway.create_index(name, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return IndexInfo(**info)


@indexes.post("/{name}/promote", dependencies=TOKEN_REQUIRED)
async def promote(name: IndexNameParam, body: PromoteRequest, gateway: GatewayDep) -> IndexInfo:
    """Serve a building version everywhere (see ``CreateIndexRequest.serving``)."""
    return IndexInfo(**await gateway.promote(name, body))


@indexes.post("/{name}/hold-back", dependencies=TOKEN_REQUIRED)
async def hold_back(name: IndexNameParam, body: PromoteRequest, gateway: GatewayDep) -> IndexInfo:
    """Stop serving a version everywhere (a retire's first step); ``promote`` serves it again."""
    return IndexInfo(**await gateway.hold_back(name, body))


@indexes.delete("/{name}", dependencies=TOKEN_REQUIRED)
async def drop_index(
    name: IndexNameParam, gateway: GatewayDep, model_version: VersionQuery = None
) -> DropResult:
    return DropResult(**await gateway.drop_index(name, model_version))


@indexes.post("/{name}/upsert", dependencies=TOKEN_REQUIRED)
async def upsert(name: IndexNameParam, body: UpsertRequest, gateway: GatewayDep) -> WriteResult:
    return WriteResult(**await gateway.upsert(name, body))


@indexes.post("/{name}/delete", dependencies=TOKEN_REQUIRED)
async def delete(name: IndexNameParam, body: DeleteRequest, gateway: GatewayDep) -> WriteResult:
    return WriteResult(**await gateway.delete(name, body))


@indexes.post("/{name}/search", response_model=SearchResponse)
async def search(name: IndexNameParam, body: SearchRequest, gateway: GatewayDep) -> Response:
    # Serialised straight to JSON, as on a node: the shards' hits are already checked numbers.
    return Response(to_json(await gateway.search(name, body)), media_type="application/json")


@indexes.post("/{name}/items", response_model=ItemsResponse)
async def items(name: IndexNameParam, body: ItemsRequest, gateway: GatewayDep) -> Response:
    gateway.check_batch(len(body.ids))
    found = await gateway.items(name, body.ids, body.model_version)
    return Response(to_json(found), media_type="application/json")


@indexes.post("/{name}/snapshot", dependencies=TOKEN_REQUIRED)
async def snapshot(
    name: IndexNameParam, gateway: GatewayDep, model_version: VersionQuery = None
) -> SnapshotResult:
    return SnapshotResult(**await gateway.snapshot(name, model_version))


async def _fan_out_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FanOutError)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return errors.error_response(exc.status, exc.code, str(exc))


async def _shard_rejected(request: Request, exc: Exception) -> JSONResponse:
    """A node's 4xx, passed through with its reason; a node refusing the gateway's own token
    is the gateway's configuration, not the caller's mistake."""
    assert isinstance(exc, ShardRejected)
    answer = exc.response
    if answer.status_code in (401, 403):
        log.error("shard %d refused the gateway's upstream token: %s", exc.shard, answer.text)
        detail = (
            f"shard {exc.shard} refused the gateway's upstream token ({answer.status_code}); "
            "check settings.gateway.upstream_token"
        )
        return errors.error_response(502, "upstream_unauthorized", detail)
    try:
        body = from_json(answer.content)
    except ValueError:
        body = None
    note = f" ({exc.note})" if exc.note else ""
    if isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body:
        return errors.error_response(answer.status_code, body["error"], f"{body['detail']}{note}")
    code = errors.HTTP_CODES.get(answer.status_code, "upstream_shard_rejected")
    detail = answer.text[:500] or f"shard {exc.shard} answered {answer.status_code}"
    return errors.error_response(answer.status_code, code, detail + note)


def create_gateway_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """A gateway over ``settings.gateway.shards``; raises ``ValueError`` on a bad shard map.
    ``freeze_heap``: see ``core.heap.serving_heap``.

    The lifespan opens one keep-alive HTTP client to the nodes, probes them, and keeps
    probing every ``health_interval_s``; ``app.state.gateway`` is the ``Gateway``.
    """
    settings = settings or Settings()
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        await gateway.start()
        log.info(
            "gateway over %d shard(s), %d partition(s): %s",
            len(gateway.shards),
            gateway.shard_map.num_partitions,
            "; ".join(
                f"shard {s.index} {list(gateway.shard_map.partitions_of(s.index))} "
                + ",".join(r.url for r in s.replicas)
                for s in gateway.shards
            ),
        )
        try:
            with serving_heap(gateway.metrics.gc, freeze=freeze_heap):
                yield {"gateway": gateway}
        finally:
            await gateway.close()

    app = FastAPI(
        title="nrtrec gateway",
        summary="The query-node API over sharded, replicated query nodes",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    errors.install(app)
    app.add_exception_handler(FanOutError, _fan_out_error)
    app.add_exception_handler(ShardRejected, _shard_rejected)
    app.add_middleware(LatencyMiddleware, request_seconds=gateway.metrics.request_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.query_node.max_body_bytes)
    app.include_router(health)
    app.include_router(indexes)
    return app

"""``/v1/indexes``: create, list, promote, hold back, drop, upsert, delete, search, items
(look-up), snapshot.

Handlers are plain functions, so Starlette runs them in its thread pool: a write waits on the
index's own lock, not on the event loop. Search is the exception: it runs on the event loop
when the index is free (a search is cheaper than the hop) and in the pool when it is not.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from nrtrec.ann import VectorIndex
from nrtrec.query_node.errors import BatchTooLarge
from nrtrec.query_node.http.deps import (
    TOKEN_REQUIRED,
    IndexNameParam,
    Node,
    NodeDeclarations,
    NodeMetrics,
)
from nrtrec.query_node.http.search_path import answer_search
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas.query_api import (
    CreateIndexRequest,
    DeleteRequest,
    DropResult,
    IndexInfo,
    IndexKey,
    IndexMemory,
    ItemsRequest,
    ItemsResponse,
    PromoteRequest,
    SearchRequest,
    SearchResponse,
    SnapshotInfo,
    SnapshotResult,
    UpsertRequest,
    WriteResult,
)

router = APIRouter(prefix="/v1/indexes", tags=["indexes"])

M = TypeVar("M", bound=BaseModel)

VersionQuery = Annotated[int | None, Query(ge=1, description="absent: every version")]


def info(index: VectorIndex, node: QueryNode) -> IndexInfo:
    return IndexInfo(
        name=index.name,
        model_version=index.model_version,
        dim=index.dim,
        metric=index.metric,
        count=index.count,
        serving=node.serving(index.name, index.model_version),
        backend=index.spec.backend,
        quantization=index.spec.quantization,
        memory=index_memory(index),
    )


def index_memory(index: VectorIndex) -> IndexMemory:
    graph = index.memory()
    return IndexMemory(
        graph_vector_bytes=graph.vectors,
        graph_link_bytes=graph.links,
        full_precision_bytes=index.full_precision_bytes,
        total_bytes=graph.total + index.full_precision_bytes,
    )


def _check_batch(node: QueryNode, n: int) -> None:
    # Bounds one request's memory and how long its write holds the index; in-process callers
    # (a bulk loader) may pass bigger batches.
    BatchTooLarge.check(n, node.settings.query_node.max_batch)


@router.get("")
def list_indexes(node: Node) -> list[IndexInfo]:
    return [info(index, node) for index in node.indexes()]


@router.put(
    "/{name}",
    dependencies=TOKEN_REQUIRED,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "exists already with this spec; unchanged"}},
)
def create_index(
    name: IndexNameParam,
    body: CreateIndexRequest,
    node: Node,
    declarations: NodeDeclarations,
    response: Response,
) -> IndexInfo:
    """Create the index here and, on a node that follows Kafka, declare it, so that every node
    (a replica started later, this one with a lost data dir) builds it too."""
    index, created = node.create_index(
        name,
        body.model_version,
        body.dim,
        body.metric,
        M=body.M,
        ef_construction=body.ef_construction,
        max_elements=body.max_elements,
        backend=body.backend,
        quantization=body.quantization,
        serving=body.serving,
    )
    if declarations is not None:
        # What this node holds now: an index that existed keeps its state.
        declarations.declare(index.spec, serving=node.serving(name, body.model_version))
    if not created:
        response.status_code = status.HTTP_200_OK
    return info(index, node)


@router.post("/{name}/promote", dependencies=TOKEN_REQUIRED)
def promote_index(
    name: IndexNameParam,
    body: PromoteRequest,
    node: Node,
    declarations: NodeDeclarations,
) -> IndexInfo:
    """Serve a building version (a no-op for one already served), and declare it ``live``."""
    index = node.promote(name, body.model_version)
    if declarations is not None:
        declarations.declare(index.spec)
    return info(index, node)


@router.post("/{name}/hold-back", dependencies=TOKEN_REQUIRED)
def hold_back_index(
    name: IndexNameParam,
    body: PromoteRequest,
    node: Node,
    declarations: NodeDeclarations,
) -> IndexInfo:
    """Stop serving a version (a no-op for a building one) and declare it ``building``: the
    first step of a retire, so that nothing answers from it before it is dropped."""
    index = node.index(name, body.model_version)
    node.hold_back(name, body.model_version)
    if declarations is not None:
        declarations.declare(index.spec, serving=False)
    return info(index, node)


@router.delete("/{name}", dependencies=TOKEN_REQUIRED)
def drop_index(
    name: IndexNameParam,
    node: Node,
    declarations: NodeDeclarations,
    model_version: VersionQuery = None,
) -> DropResult:
    specs = [
        index.spec
        for index in node.indexes()
        if index.name == name and model_version in (None, index.model_version)
    ]
    keys = node.drop_index(name, model_version)
    if declarations is not None:
        for spec in specs:
            declarations.drop(spec)
    return DropResult(dropped=[IndexKey(name=n, model_version=v) for n, v in keys])


def _json_body(model: type[M]) -> dict:
    """The OpenAPI request body of a handler that parses its own (``_parsed``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def _parsed(model: type[M], request: Request) -> M:
    """The body parsed in one pass (bytes to model, in pydantic's core) instead of FastAPI's
    json.loads-then-validate, which took most of a 1,000-item upsert's time outside the graph
    (py-spy); errors keep the same {error, detail} answer."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


@router.post(
    "/{name}/upsert",
    dependencies=TOKEN_REQUIRED,
    response_model=WriteResult,
    openapi_extra=_json_body(UpsertRequest),
)
async def upsert(name: IndexNameParam, request: Request, node: Node) -> Response:
    body = await _parsed(UpsertRequest, request)
    _check_batch(node, len(body.items))
    # The write waits on the index's lock in a worker, never on the event loop.
    index, applied = await run_in_threadpool(
        node.upsert,
        name,
        [item.id for item in body.items],
        [item.vector for item in body.items],
        [item.attributes for item in body.items],
        model_version=body.model_version,
    )
    result = {"model_version": index.model_version, "applied": applied, "count": index.count}
    return Response(to_json(result), media_type="application/json")


@router.post("/{name}/delete", dependencies=TOKEN_REQUIRED)
def delete(name: IndexNameParam, body: DeleteRequest, node: Node) -> WriteResult:
    _check_batch(node, len(body.ids))
    index, applied = node.delete(name, body.ids, model_version=body.model_version)
    return WriteResult(model_version=index.model_version, applied=applied, count=index.count)


@router.post(
    "/{name}/search", response_model=SearchResponse, openapi_extra=_json_body(SearchRequest)
)
async def search(
    name: IndexNameParam, request: Request, node: Node, metrics: NodeMetrics
) -> Response:
    # Most searches are answered before they reach here (``search_path.SearchFastPath``); what
    # comes is what that path could not answer, and is answered here with its error.
    body = await _parsed(SearchRequest, request)
    return Response(await answer_search(node, metrics, name, body), media_type="application/json")


@router.post("/{name}/items", response_model=ItemsResponse)
def items(name: IndexNameParam, body: ItemsRequest, node: Node) -> Response:
    """The stored vector and attributes of each id the index holds; unknown ids are absent
    (the recommender app's "similar items" starts from an item's own vector)."""
    _check_batch(node, len(body.ids))
    index, found = node.items(name, body.ids, model_version=body.model_version)
    content = {
        "items": [
            {"id": item.id, "vector": item.vector.tolist(), "attributes": item.attributes}
            for item in found
        ],
        "model_version": index.model_version,
    }
    return Response(to_json(content), media_type="application/json")


@router.post("/{name}/snapshot", dependencies=TOKEN_REQUIRED)
def snapshot(
    name: IndexNameParam, node: Node, model_version: VersionQuery = None
) -> SnapshotResult:
    saved = node.snapshot(name, model_version)
    return SnapshotResult(
        snapshots=[
            SnapshotInfo(
                name=s.name, model_version=s.model_version, snapshot_id=s.snapshot_id, count=s.count
            )
            for s in saved
        ]
    )

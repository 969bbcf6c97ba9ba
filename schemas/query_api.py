"""HTTP bodies of the query-node API; the gateway and the recommender app speak the same shape.

Paths (see DESIGN.md): ``GET /v1/indexes``, ``PUT|DELETE /v1/indexes/{name}``, ``POST
/v1/indexes/{name}/upsert|delete|search|items|snapshot|load``. Every error is an ``ErrorBody``.
``nrtrec.query_node.client`` is the one client of this API.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from nrtrec.schemas.types import Count, Id, Record, Vector, VersionParam

INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

IndexName = Annotated[str, Field(pattern=INDEX_NAME_PATTERN)]
"""An index name is also a directory name in the snapshot store: no slashes, no leading dot."""

Attributes = dict[str, Any]

FilterJson = dict[str, Any]
"""Attribute conditions, all of which must hold: ``{"category": "toys"}``, ``{"location": {"in":
["US", "CA"]}}``, ``{"price": {"gte": 10, "lt": 50}}``; operators eq, ne, in, gt, gte, lt, lte.
The grammar is ``schemas.filters`` (``parse_filter`` reads this form)."""


class Metric(StrEnum):
    L2 = "l2"
    IP = "ip"
    COSINE = "cosine"
    # Binary codes: one 0 or 1 per bit (dim = bits); the score is the number of bits that differ.
    HAMMING = "hamming"

    @property
    def smaller_is_nearer(self) -> bool:
        """Whether scores are distances (l2, hamming: nearest first is ascending) rather than
        similarities (ip, cosine: descending). The one place that says so: exact search and
        the gateway's merge order by it."""
        return self in (Metric.L2, Metric.HAMMING)


class Backend(StrEnum):
    """The ANN library under an index: hnswlib (default) or faiss's HNSW (filters checked in
    native code; int8 codes)."""

    HNSW = "hnsw"
    FAISS = "faiss"


class Quantization(StrEnum):
    """How the graph holds vectors: float32, or 8-bit codes (faiss only) whose candidates are
    rescored with the full-precision vectors."""

    NONE = "none"
    INT8 = "int8"


class CreateIndexRequest(Record):
    """``PUT /v1/indexes/{name}``; absent parameters take the node's defaults."""

    dim: Count = Field(ge=1, le=4096)
    metric: Metric
    model_version: VersionParam
    backend: Backend | None = None
    quantization: Quantization | None = None
    M: Count | None = Field(default=None, ge=2, le=256)
    ef_construction: Count | None = Field(default=None, ge=1, le=10_000)
    max_elements: Count | None = Field(default=None, ge=1, le=100_000_000)
    # False: the index is created *building*: it takes writes and answers look-ups and
    # searches, but is listed ``serving: false`` until ``POST /v1/indexes/{name}/promote``, so
    # that nothing reads a half-filled version as if it were whole (a rollout fills it first).
    # An index that exists already keeps its state.
    serving: bool = True


class PromoteRequest(Record):
    """``POST /v1/indexes/{name}/promote``: a building version is complete; serve it."""

    model_version: VersionParam


class IndexMemory(BaseModel):
    """Bytes per vector: what the graph holds (its copy or code of the vector, its links) and
    the float32 copy kept beside it for exact search, rescoring and look-ups."""

    graph_vector_bytes: float
    graph_link_bytes: float
    full_precision_bytes: float
    total_bytes: float


class IndexInfo(BaseModel):
    """One entry of ``GET /v1/indexes``; also the answer to ``PUT``."""

    name: str
    model_version: int
    dim: int
    metric: Metric
    count: int
    # False while the version is building (see ``CreateIndexRequest.serving``); through the
    # gateway, True only when every shard serves it.
    serving: bool = True
    backend: Backend = Backend.HNSW
    quantization: Quantization = Quantization.NONE
    memory: IndexMemory | None = None


class UpsertItem(Record):
    id: Id
    vector: Vector
    attributes: Attributes = Field(default_factory=dict)


class UpsertRequest(Record):
    """``POST /v1/indexes/{name}/upsert``; an existing id is replaced in place."""

    items: list[UpsertItem] = Field(min_length=1)
    # Absent: the newest version of the index.
    model_version: VersionParam | None = None


class DeleteRequest(Record):
    """``POST /v1/indexes/{name}/delete``; unknown ids are ignored (a delete is idempotent)."""

    ids: list[Id] = Field(min_length=1)
    model_version: VersionParam | None = None


class WriteResult(BaseModel):
    """What an upsert or delete changed, and the index's size after it."""

    model_version: int
    applied: int
    count: int


class SearchRequest(Record):
    """``POST /v1/indexes/{name}/search``; ``k`` and ``ef`` are JSON integers (422 otherwise),
    bounded by the node's settings (400)."""

    vector: Vector
    k: Count = 10
    ef: Count | None = None
    filter: FilterJson | None = None
    # Absent: the newest live version of the index.
    model_version: VersionParam | None = None
    # Each hit then carries its item's attributes (titles for a page, without a second call).
    include_attributes: bool = False


class SearchHit(BaseModel):
    id: str
    # l2: the Euclidean distance and hamming: the number of differing bits (smaller is nearer);
    # ip and cosine: the similarity (larger is nearer), i.e. the dot product, of unit vectors
    # for cosine.
    score: float
    # Only with ``include_attributes``.
    attributes: Attributes | None = None


class SearchResponse(BaseModel):
    items: list[SearchHit]
    model_version: int
    # Set by the gateway (a node answers for itself, without them): ``partial`` is true when a
    # shard could not answer, so the items come from the others; ``failed_shards`` names them.
    partial: bool | None = None
    failed_shards: list[int] | None = None


class ItemsRequest(Record):
    """``POST /v1/indexes/{name}/items``: look items up by id (a read, open like search)."""

    ids: list[Id] = Field(min_length=1)
    # Absent: the newest live version of the index.
    model_version: VersionParam | None = None


class StoredItem(BaseModel):
    id: str
    # As stored: unit length for cosine.
    vector: list[float]
    attributes: Attributes


class ItemsResponse(BaseModel):
    """The items found, in the order asked, each once; unknown ids are simply absent."""

    items: list[StoredItem]
    model_version: int
    # Set by the gateway, as for a search: a shard that could not answer leaves its items out.
    partial: bool | None = None
    failed_shards: list[int] | None = None


class IndexKey(BaseModel):
    name: str
    model_version: int


class DropResult(BaseModel):
    """``DELETE /v1/indexes/{name}``: the versions removed, with their snapshots."""

    dropped: list[IndexKey]


class SnapshotInfo(BaseModel):
    name: str
    model_version: int
    snapshot_id: str
    count: int


class SnapshotResult(BaseModel):
    """``POST /v1/indexes/{name}/snapshot``."""

    snapshots: list[SnapshotInfo]


class LoadRequest(Record):
    """``POST /v1/indexes/{name}/load``: serve a snapshot built elsewhere (a bulk backfill's).
    Exactly one of ``path`` and ``snapshot_dir`` (paths on the node's machine)."""

    path: str | None = Field(
        default=None, description="one snapshot folder: <data_dir>/<name>/<version>/<id>"
    )
    snapshot_dir: str | None = Field(
        default=None,
        description="a snapshot store's data dir: the newest snapshot of the index there",
    )
    # With snapshot_dir, absent: every version of the index found there.
    model_version: VersionParam | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LoadRequest:
        if (self.path is None) == (self.snapshot_dir is None):
            raise ValueError("give exactly one of path and snapshot_dir")
        return self


class LoadedIndex(BaseModel):
    name: str
    model_version: int
    count: int
    # The snapshot read, and the copy saved in this node's data dir.
    source: str
    snapshot_id: str
    # What the served index reflects; the node's delta consumer replays from here.
    offsets: dict[str, int]


class LoadResult(BaseModel):
    loaded: list[LoadedIndex]


class NodeHealth(BaseModel):
    """A query node's ``GET /healthz`` (the gateway's differs: it reports every replica)."""

    status: str
    indexes: int
    # The item-deltas applied, {"topic:partition": next offset}; lowered while a swapped-in
    # snapshot replays, so a rollout waits until they reach the topic's end.
    offsets: dict[str, int] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error answer: a short machine-readable code and a sentence for a person."""

    error: str
    detail: str

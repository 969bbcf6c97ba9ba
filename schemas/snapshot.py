"""The index snapshot format: what a bulk build writes and a query node loads (and saves itself).

A snapshot is one folder ``<snapshot_id>/`` holding:

- ``graph.bin``: the graph in its library's own format (``spec.backend``): hnswlib's
  ``save_index`` (a row number is its label) or faiss's ``write_index``; a faiss graph also
  writes ``graph-rows.npz`` (the row of each faiss id, which ids are live, the vectors waiting
  for an int8 graph's training);
- ``vectors.npy``: the stored vectors by row (float32, unit length for cosine), numpy's format;
- ``items.json``: ``{"ids": [...], "attributes": [...]}`` by row; a row whose id is null is free;
- ``meta.json``: the ``SnapshotManifest`` below, written last, with the sha256 of each file.

A store of snapshots is ``<data_dir>/<index name>/<model_version>/<snapshot_id>/``; ids sort by
time (``%Y%m%dT%H%M%S%fZ``). ``offsets`` say which ``item-deltas`` records the index reflects
(``offset_key(topic, partition)`` → the next offset to apply), so a node replays from there.
``serving`` says whether the index was answering searches (false: building, during a rollout).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from nrtrec.schemas.query_api import Backend, IndexName, Metric, Quantization
from nrtrec.schemas.types import ModelVersion, Record

SNAPSHOT_FORMAT = 1
GRAPH, VECTORS, ITEMS, MANIFEST = "graph.bin", "vectors.npy", "items.json", "meta.json"


class SnapshotSpec(Record):
    """What the index is: its key, its vector space and its HNSW build parameters."""

    name: IndexName
    model_version: ModelVersion
    dim: int = Field(ge=1, le=4096)
    metric: Metric
    M: int = Field(ge=2, le=256)
    ef_construction: int = Field(ge=1)
    max_elements: int = Field(ge=1)
    # Absent in snapshots written before there was a choice: hnswlib, float32.
    backend: Backend = Backend.HNSW
    quantization: Quantization = Quantization.NONE


class SnapshotManifest(Record):
    """``meta.json``: the snapshot's format, spec, size and the offsets it reflects."""

    format: int
    snapshot_id: str
    created: str = Field(description="ISO 8601, UTC")
    spec: SnapshotSpec
    capacity: int = Field(ge=0, description="rows allocated in the graph")
    count: int = Field(ge=0, description="live items")
    revision: int = Field(ge=0, default=0)
    offsets: dict[str, int] = Field(default_factory=dict)
    # False for a version held back during a rollout: a node restarting from this snapshot
    # keeps it out of answers until promoted. Absent in snapshots written before rollouts.
    serving: bool = True
    # sha256 (hex) of each file beside the manifest: a snapshot is loaded only when they match.
    files: dict[str, str] = Field(default_factory=dict)


class OffsetKey(BaseModel):
    topic: str
    partition: int


def offset_key(topic: str, partition: int) -> str:
    """The key of a snapshot's ``offsets``: ``"<topic>:<partition>"``."""
    return f"{topic}:{partition}"


def parse_offset_key(key: str) -> OffsetKey | None:
    """``offset_key``'s topic and partition, or None for a key that is not one."""
    topic, _, partition = str(key).rpartition(":")
    if not topic or not partition.isdigit():
        return None
    return OffsetKey(topic=topic, partition=int(partition))

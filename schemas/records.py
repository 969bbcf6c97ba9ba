"""Records that nrtrec's own services produce: item deltas, dead letters, user vectors,
impressions."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from nrtrec.schemas.events import ListingOp
from nrtrec.schemas.partitioning import partition_for
from nrtrec.schemas.types import (
    Id,
    Label,
    ModelVersion,
    Record,
    RequestId,
    TimestampMs,
    Vector,
)


class ItemDelta(Record):
    """Topic ``item-deltas``: what a query node applies to its index.

    Key ``"<item_id>@v<model_version>"`` (``key()``): the topic is compacted, and compaction
    keeps the newest record of each key, so one key per item and version keeps every version's
    newest delta. The partition is ``partition_for(item_id)`` (``partition()``), given by the
    producer: it is the item that places a delta on its shard, whatever the version.
    """

    op: ListingOp
    item_id: Id
    model_version: ModelVersion
    vector: Vector | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    source_ts: TimestampMs

    @model_validator(mode="after")
    def _upsert_has_vector(self) -> ItemDelta:
        if self.op is ListingOp.UPSERT and self.vector is None:
            raise ValueError("vector is required when op is 'upsert'")
        return self

    def key(self) -> str:
        return delta_key(self.item_id, self.model_version)

    def partition(self, num_partitions: int) -> int:
        return partition_for(self.item_id, num_partitions)


def delta_key(item_id: str, model_version: int) -> str:
    """The key of an ``item-deltas`` record: ``"<item_id>@v<model_version>"``."""
    return f"{item_id}@v{model_version}"


class IndexDeclaration(Record):
    """Topic ``index-declarations``, key ``"<name>:<model_version>"``: an index every query node
    serves (``live``), holds without serving it yet (``building``: a rollout is filling it), or
    no longer has (``dropped``: its deltas are skipped). The topic is
    compacted and every node reads it from the beginning, so a node started from nothing knows
    which indexes to build before it replays ``item-deltas``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    model_version: ModelVersion
    state: Literal["live", "building", "dropped"] = "live"
    dim: int = Field(ge=1, le=4096)
    metric: Literal["l2", "ip", "cosine", "hamming"]
    M: int = Field(ge=2, le=256)
    ef_construction: int = Field(ge=1)
    max_elements: int = Field(ge=1)
    # Absent in declarations written before there was a choice: hnswlib, float32.
    backend: Literal["hnsw", "faiss"] = "hnsw"
    quantization: Literal["none", "int8"] = "none"
    ts: TimestampMs

    def key(self) -> str:
        return f"{self.name}:{self.model_version}"


class DeadLetter(Record):
    """Topic ``dead-letters``: an input that failed validation or processing, with the reason."""

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    error: str = Field(min_length=1)
    # The original value as text (UTF-8, or repr of the bytes when it was not UTF-8).
    payload: str


class UserVector(Record):
    """One user's vector made by one encoder version."""

    user_id: Id
    model_version: ModelVersion
    vector: Vector
    # Event time of the newest click the vector reflects; lets a consumer measure freshness.
    source_ts: TimestampMs
    updated_ts: TimestampMs


class UserVectors(Record):
    """What the user-vector store holds per user: the last few versions, newest first."""

    user_id: Id
    versions: list[UserVector] = Field(min_length=1)
    # The items the newest vector was made from, newest first: the app drops them from
    # recommendations and the homepage shows them as "your recent views".
    recent_items: list[Id] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _one_user_one_entry_per_version(self) -> UserVectors:
        if any(v.user_id != self.user_id for v in self.versions):
            raise ValueError("every version must belong to user_id")
        seen = [v.model_version for v in self.versions]
        if len(set(seen)) != len(seen):
            raise ValueError("model_version must appear at most once")
        return self

    def newest(self, version: int | None = None) -> UserVector | None:
        for v in self.versions:
            if version is None or v.model_version == version:
                return v
        return None

    def with_version(
        self, vector: UserVector, keep: int, recent_items: list[str] | None = None
    ) -> UserVectors:
        """This record with ``vector`` replacing its version's entry, trimmed to ``keep``.

        ``recent_items`` replaces the stored list when given; otherwise it is kept.
        """
        others = [v for v in self.versions if v.model_version != vector.model_version]
        ordered = sorted([vector, *others], key=lambda v: v.model_version, reverse=True)
        return UserVectors(
            user_id=self.user_id,
            versions=ordered[:keep],
            recent_items=self.recent_items if recent_items is None else recent_items,
        )


class Source(StrEnum):
    """Which path a served list took (DESIGN.md, "Embedding versions")."""

    # The newest vector (of the user; of the item for similar items) against its own version.
    PERSONALIZED = "personalized"
    # An older version's vector against that version's index: the newest had no live index,
    # or an experiment's arm asked for the older version.
    OLDER_VERSION = "older-version"
    # The most viewed items: no vector, no live index for any of them, a failure, or the
    # control arm of an experiment.
    POPULAR = "popular"


class Impression(Record):
    """Topic ``impressions``, key ``user_id``: one list of recommendations the app served to a
    user, under the experiment arm the user is assigned to (``experiment`` null and ``arm``
    ``"default"`` when no experiment runs). A click on it carries its ``request_id``."""

    request_id: RequestId
    experiment: Label | None = None
    user_id: Id
    arm: Label
    # The version of the vectors matched; null for popular items.
    model_version: ModelVersion | None = None
    source: Source
    # As served, best first (an answer holds at most app.max_k; 1000 bounds any setting).
    items: list[Id] = Field(max_length=1000)
    ts: TimestampMs

    def key(self) -> str:
        return self.user_id

"""``bulk.json``: what a bulk run built and where delta mode continues from (it crosses a
process boundary: the item-embedding job reads its listings offsets)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from nrtrec.core.settings import Settings
from nrtrec.streaming.errors import BulkError

MANIFEST = "bulk.json"


class BulkShard(BaseModel):
    shard: int
    partitions: list[int]
    snapshot_path: str
    count: int


class BulkManifest(BaseModel):
    """``<out_dir>/bulk.json``: what a bulk run built and where delta mode continues from."""

    model_version: int
    index_name: str
    items: int = Field(description="live items, in the snapshots")
    deleted: int = Field(description="items whose last change was a delete")
    dead_letters: int = Field(default=0, description="listings sent to dead-letters")
    listings_topic: str
    # partition -> the offset reading stopped at (exclusive): the streaming job starts there.
    listings_offsets: dict[int, int]
    item_deltas_topic: str
    # partition -> high watermark when the run began: the snapshots' offsets.
    item_deltas_offsets: dict[int, int]
    shards: list[BulkShard]
    created: str
    seconds: float


def read_manifest(path: Path | str) -> BulkManifest:
    """A ``bulk.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        return BulkManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise BulkError(f"no bulk manifest at {path}; run `nrtrec bulk` first") from None
    except ValueError as e:
        raise BulkError(f"{path} is not a bulk manifest: {e}") from None


def read_listings_offsets(path: Path | str) -> dict[int, int]:
    """Partition → offset of ``listings`` where a bulk run stopped reading (exclusive): where
    the item-embedding job starts, so that it misses no listing and redoes none."""
    return dict(read_manifest(path).listings_offsets)


def write_manifest(path: Path, manifest: BulkManifest) -> None:
    # Renamed into place: a job that reads it never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def default_out_dir(settings: Settings) -> Path:
    return settings.bulk_out_dir()

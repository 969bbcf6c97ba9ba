"""Approximate nearest-neighbour indexes over string ids, with attribute filters and snapshots.

hnswlib's tiny API, kept tiny: an ``IndexSpec`` says what an index is; a ``VectorIndex`` is
upserted, deleted from, searched (with a ``schemas.filters`` filter) and looked up by id; a
``SnapshotStore`` saves and loads indexes in the format of ``schemas.snapshot``. The query node
serves these indexes; the bulk backfill builds them. No service lives here::

    index = VectorIndex(IndexSpec("items", model_version=1, dim=64, metric="cosine"))
    index.upsert(["a"], [vector], [{"category": "toys"}])
    result = index.search(vector, k=10, filter={"category": "toys"})
"""

from nrtrec.ann.errors import (
    AnnError,
    IndexBusy,
    InvalidSpec,
    InvalidVector,
    OutOfRange,
    SnapshotError,
)
from nrtrec.ann.index import VectorIndex
from nrtrec.ann.results import Hit, SearchResult, StoredItem, Strategy
from nrtrec.ann.snapshots import Snapshot, SnapshotStore
from nrtrec.ann.spec import IndexSpec

__all__ = [
    "AnnError",
    "Hit",
    "IndexBusy",
    "IndexSpec",
    "InvalidSpec",
    "InvalidVector",
    "OutOfRange",
    "SearchResult",
    "Snapshot",
    "SnapshotError",
    "SnapshotStore",
    "StoredItem",
    "Strategy",
    "VectorIndex",
]

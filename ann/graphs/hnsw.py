"""hnswlib behind the ``Graph`` interface: the default backend.

Rows are hnswlib labels. A removed row is marked deleted; ``add`` on that label later unmarks
it and relinks it in place (hnswlib treats it as an update), so churn reuses the same slots
without ``replace_deleted``. hnswlib's ``ef`` belongs to the index (``shared_ef``) and its
filter is a Python callable it calls for every node it visits (``FilterSupport.CALLBACK``).

Scores: hnswlib returns the squared distance for l2 (we take the root) and 1 - dot for ip and
cosine (we return the dot). hnswlib has no Hamming space; hamming indexes use its l2 space,
whose squared distance between 0/1 vectors is the number of differing bits, exactly (each
term is 0 or 1, each partial sum an integer well inside float32), returned as it is.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Self

import hnswlib
import numpy as np

from nrtrec.ann.graphs.base import FilterSupport, Graph, GraphMemory, GraphShort
from nrtrec.schemas.query_api import Backend, Metric
from nrtrec.schemas.snapshot import GRAPH

if TYPE_CHECKING:
    from nrtrec.ann.spec import IndexSpec

# hnswlib's per-element bookkeeping beside its links: the label (8) and the pointer to the
# upper levels' lists (8).
_ELEMENT_OVERHEAD = 16


def _space(metric: Metric) -> str:
    # See the module's docstring: the squared L2 distance of bits is their Hamming distance.
    return "l2" if metric is Metric.HAMMING else metric.value


class HnswGraph(Graph):
    backend = Backend.HNSW
    filter_support = FilterSupport.CALLBACK
    shared_ef = True

    def __init__(self, spec: IndexSpec, index: hnswlib.Index):
        self._spec = spec
        self._index = index

    @classmethod
    def create(cls, spec: IndexSpec, capacity: int) -> Self:
        index = hnswlib.Index(space=_space(spec.metric), dim=spec.dim)
        index.init_index(max_elements=capacity, M=spec.M, ef_construction=spec.ef_construction)
        return cls(spec, index)

    @classmethod
    def load(cls, spec: IndexSpec, folder: Path, capacity: int) -> Self:
        index = hnswlib.Index(space=_space(spec.metric), dim=spec.dim)
        index.load_index(str(folder / GRAPH), max_elements=capacity)
        return cls(spec, index)

    def save(self, folder: Path) -> list[str]:
        self._index.save_index(str(folder / GRAPH))
        return [GRAPH]

    @property
    def capacity(self) -> int:
        return self._index.get_max_elements()

    @property
    def size(self) -> int:
        return self._index.get_current_count()

    def add(self, rows: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        self._index.add_items(vectors, rows, num_threads=threads)

    def remove(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            # Not there (never added), or marked already: either way out of every search.
            with contextlib.suppress(RuntimeError):
                self._index.mark_deleted(row)

    def resize(self, capacity: int) -> None:
        self._index.resize_index(capacity)

    def set_ef(self, ef: int) -> None:
        self._index.set_ef(ef)

    def search(
        self, query: np.ndarray, k: int, ef: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        # ef was set by the index's lock (shared_ef); hnswlib searches with max(ef, k).
        try:
            labels, distances = self._index.knn_query(
                query, k=k, num_threads=1, filter=None if allowed is None else allowed.__getitem__
            )
        except RuntimeError as e:
            raise GraphShort(str(e)) from None
        rows, metric = labels[0].astype(np.int64), self._spec.metric
        if metric is Metric.L2:
            return rows, np.sqrt(np.maximum(distances[0], 0.0))
        if metric is Metric.HAMMING:
            return rows, distances[0]  # the squared distance is the number of differing bits
        return rows, 1.0 - distances[0]

    def memory(self) -> GraphMemory:
        m = self._spec.M
        # Level 0 holds 2M links and a count; an element reaches each upper level with
        # probability 1/M (hnswlib's mult = 1/ln M), so it has 1/(M-1) upper lists on average.
        links = (2 * m * 4 + 4) + (m * 4 + 4) / (m - 1) + _ELEMENT_OVERHEAD
        return GraphMemory(vectors=float(self._spec.dim * 4), links=float(links))

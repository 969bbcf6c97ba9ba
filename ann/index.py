"""One vector index for one (name, model_version): a graph from one of the ANN libraries
(``ann.graphs``: hnswlib or faiss, chosen by the spec's ``backend``) with string ids,
attributes, filtered search, exact search for tight filters and rescoring of quantized graphs.

Rows. An item lives in a row: its index in our arrays (vectors, attributes, ids) and the row
the graph knows it by. A deleted item's row goes on a free list and the next new item takes it
back, so a long run of adds and deletes reuses the same rows and memory stays bounded.

Scores. l2: the Euclidean distance, smaller is nearer. hamming (vectors of 0/1 values, one a
bit): the number of differing bits, smaller is nearer. ip: the dot product. cosine: the dot
product of unit vectors. Every graph answers in these terms; exact search computes the same
quantities with numpy from the full-precision vectors kept here, which also rescore the
candidates of a quantized (int8) graph.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from nrtrec.ann.attributes import AttributeStore
from nrtrec.ann.errors import InvalidSpec, InvalidVector, OutOfRange
from nrtrec.ann.exact import exact_top_k
from nrtrec.ann.graphs import FilterSupport, Graph, GraphMemory, GraphShort, graph_class
from nrtrec.ann.lock import IndexLock
from nrtrec.ann.results import Hit, SearchResult, StoredItem, Strategy
from nrtrec.ann.spec import IndexSpec, is_int
from nrtrec.ann.vectors import checked_matrix, checked_query
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.filters import Filter, parse_filter
from nrtrec.schemas.query_api import Metric, Quantization

log = logging.getLogger(__name__)


@dataclass
class IndexState:
    """What a snapshot keeps of an index, by row; handed out under the index's read lock."""

    graph: Graph
    capacity: int
    ids: list[str | None]
    attributes: list[dict[str, Any] | None]
    # Rows past the last used one are left out; rows without an id are free (deleted).
    vectors: np.ndarray


class VectorIndex:
    """An HNSW index over string ids. Thread-safe: searches run in parallel, writes alone."""

    def __init__(self, spec: IndexSpec, settings: QueryNodeSettings | None = None):
        self.spec = spec
        self._settings = settings or QueryNodeSettings()
        self._graph = graph_class(spec.backend).create(spec, spec.max_elements)
        self._setup(spec.max_elements)

    def _setup(self, capacity: int) -> None:
        # Through self: a rebuild swaps the graph.
        self._lock = IndexLock(lambda ef: self._graph.set_ef(ef))
        # While a new graph is built beside the serving one: the rows written since it began.
        self._touched: set[int] | None = None
        # Bumped by every write; lets the node skip saving an unchanged index.
        self._revision = 0
        self._revision_lock = threading.Lock()
        self._row_of: dict[str, int] = {}
        self._ids: list[str | None] = [None] * capacity
        self._live = np.zeros(capacity, bool)
        self._vectors = np.zeros((capacity, self.spec.dim), np.float32)
        # For l2 and hamming exact search: |x - q|^2 = |x|^2 - 2 x.q + |q|^2.
        self._sq_norms = np.zeros(capacity, np.float32)
        self._attributes = AttributeStore(capacity)
        self._free: list[int] = []
        self._next_row = 0

    # ---- what it is ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_version(self) -> int:
        return self.spec.model_version

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def metric(self) -> Metric:
        return self.spec.metric

    @property
    def count(self) -> int:
        return len(self._row_of)

    def __len__(self) -> int:
        return len(self._row_of)

    @property
    def capacity(self) -> int:
        """Rows allocated, in the graph and in the arrays beside it."""
        return len(self._ids)

    def memory(self) -> GraphMemory:
        """Bytes per vector: the graph's copy or code and its links; ``full_precision_bytes``
        adds the float32 copy kept here (exact search, rescoring, look-ups)."""
        with self._lock.frozen():
            return self._graph.memory()

    @property
    def full_precision_bytes(self) -> int:
        return self.dim * 4

    @property
    def revision(self) -> int:
        return self._revision

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row_of

    def __repr__(self) -> str:
        return (
            f"VectorIndex({self.name!r}, v{self.model_version}, dim={self.dim}, "
            f"metric={self.metric.value}, count={self.count})"
        )

    def attributes(self, item_id: str) -> dict[str, Any] | None:
        with self._lock.frozen():
            row = self._row_of.get(item_id)
            return None if row is None else self._attributes.get(row)

    def vector(self, item_id: str) -> np.ndarray | None:
        """The stored vector (unit length for cosine), or None for an unknown id."""
        with self._lock.frozen():
            row = self._row_of.get(item_id)
            return None if row is None else self._vectors[row].copy()

    def items(self, ids: Sequence[str]) -> list[StoredItem]:
        """The items of ``ids`` that the index holds, in the order asked, each once; unknown ids
        are left out. One read of the index, so every item is as of the same moment."""
        with self._lock.frozen():
            found = []
            for item_id in dict.fromkeys(ids):
                row = self._row_of.get(item_id)
                if row is not None:
                    found.append(
                        StoredItem(item_id, self._vectors[row].copy(), self._attributes.get(row))
                    )
            return found

    # ---- writes ---------------------------------------------------------------------------

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]] | np.ndarray,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Add new ids and replace existing ones in place; returns the number of items written.

        Within one call the last occurrence of an id wins. Vectors are checked before anything
        changes, so a bad vector leaves the index as it was. The items go in by chunks of
        ``write_chunk``, each under the write lock alone, so that searches wait for one chunk
        rather than the whole call (a search may see some chunks of a call and not others; an
        error in the graph leaves the chunks before it written, and repeating the call is
        safe: an upsert replaces).
        """
        ids = list(ids)
        matrix = checked_matrix(self.spec, vectors, len(ids))
        attrs = list(attributes) if attributes is not None else [None] * len(ids)
        if len(attrs) != len(ids):
            raise InvalidVector(f"{len(ids)} ids but {len(attrs)} attribute sets")
        last = {item_id: i for i, item_id in enumerate(ids)}
        if len(last) != len(ids):
            keep = sorted(last.values())
            ids, matrix, attrs = [ids[i] for i in keep], matrix[keep], [attrs[i] for i in keep]
        for item_id in ids:
            if not isinstance(item_id, str) or not item_id:
                raise InvalidVector(f"ids are non-empty strings, got {item_id!r}")
        if not ids:
            return 0
        stored = self._stored_form(matrix)
        with self._lock.write():
            # Room for the whole call at once: the capacity grows as it would in one write.
            self._reserve(sum(1 for item_id in ids if item_id not in self._row_of))
        chunk = self._settings.write_chunk
        for lo in range(0, len(ids), chunk):
            hi = lo + chunk
            self._write_chunk(ids[lo:hi], stored[lo:hi], attrs[lo:hi])
        return len(ids)

    def _write_chunk(
        self, ids: list[str], stored: np.ndarray, attrs: list[Mapping[str, Any] | None]
    ) -> None:
        with self._lock.write():
            new = sum(1 for item_id in ids if item_id not in self._row_of)
            self._reserve(new)
            rows = np.fromiter((self._row_for(item_id) for item_id in ids), np.int64, len(ids))
            try:
                self._graph.add(rows, stored, self._settings.insert_threads)
            except Exception:
                self._release_new_rows(ids, rows)
                raise
            self._vectors[rows] = stored
            self._sq_norms[rows] = np.einsum("ij,ij->i", stored, stored)
            self._live[rows] = True
            for row, item_id, item_attrs in zip(rows.tolist(), ids, attrs, strict=True):
                self._ids[row] = item_id
                self._row_of[item_id] = row
                self._attributes.set(row, item_attrs or {})
            self._rebuild_if_needed(rows)
            self._bump()

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; unknown ones are ignored. Returns the number removed."""
        with self._lock.write():
            rows = []
            for item_id in dict.fromkeys(ids):
                row = self._row_of.pop(item_id, None)
                if row is None:
                    continue
                self._ids[row] = None
                self._live[row] = False
                self._attributes.clear(row)
                self._free.append(row)
                rows.append(row)
            if rows:
                self._graph.remove(np.array(rows, np.int64))
                self._rebuild_if_needed(np.array(rows, np.int64))
                self._bump()
        return len(rows)

    def _row_for(self, item_id: str) -> int:
        row = self._row_of.get(item_id)
        if row is not None:
            return row
        if self._free:
            return self._free.pop()
        row, self._next_row = self._next_row, self._next_row + 1
        return row

    def _release_new_rows(self, ids: list[str], rows: np.ndarray) -> None:
        # The graph may have added some of them before it failed; hide those again.
        pairs = zip(ids, rows.tolist(), strict=True)
        new = [row for item_id, row in pairs if item_id not in self._row_of]
        self._graph.remove(np.array(new, np.int64))
        self._free.extend(new)

    def _rebuild_if_needed(self, written: np.ndarray) -> None:
        # Under the write lock. A graph that cannot delete in place (faiss) is rebuilt once
        # retired vectors dominate; the rows written meanwhile are replayed at the swap.
        if self._touched is not None:
            self._touched.update(written.tolist())
        elif self._graph.needs_compaction():
            self._touched = set()
            name = f"rebuild-{self.name}-v{self.model_version}"
            threading.Thread(target=self._rebuild, name=name, daemon=True).start()

    def _rebuild(self) -> None:
        """Build a new graph from the live rows beside the serving one, then swap it in.
        Searches and writes go on during the build (100k faiss vectors take ~20 s here); only
        the swap, which replays the rows written meanwhile, holds the write lock."""
        threads = self._settings.insert_threads
        fresh = None
        try:
            with self._lock.frozen():
                rows = np.flatnonzero(self._live)
                vectors, graph = self._vectors[rows], self._graph
            fresh = graph.rebuilt(rows, vectors, threads)
        except Exception:
            log.exception("rebuilding %r v%d failed; the old graph serves on", *self.spec.key)
        with self._lock.write():
            touched, self._touched = self._touched or set(), None
            if fresh is None:
                return
            fresh.resize(self.capacity)
            replay = np.fromiter(touched, np.int64, len(touched))
            if len(replay):
                fresh.remove(replay)  # what it was built with for them is stale now
                live = replay[self._live[replay]]
                if len(live):
                    fresh.add(live, self._vectors[live], threads)
            self._graph = fresh
            self._bump()

    def _reserve(self, new: int) -> None:
        free = len(self._free) + self.capacity - self._next_row
        if new <= free:
            return
        needed = self._next_row + new - len(self._free)
        capacity = max(needed, math.ceil(self.capacity * self._settings.growth_factor))
        self._graph.resize(capacity)
        extra = capacity - self.capacity
        self._ids.extend([None] * extra)
        self._live = np.concatenate([self._live, np.zeros(extra, bool)])
        self._vectors = np.concatenate([self._vectors, np.zeros((extra, self.dim), np.float32)])
        self._sq_norms = np.concatenate([self._sq_norms, np.zeros(extra, np.float32)])
        self._attributes.grow(capacity)

    def _bump(self) -> None:
        with self._revision_lock:
            self._revision += 1

    # ---- search ---------------------------------------------------------------------------

    def search(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 10,
        *,
        ef: int | None = None,
        filter: Mapping[str, Any] | Filter | None = None,
        wait: bool = True,
        with_attributes: bool = False,
    ) -> SearchResult:
        """The ``k`` nearest items, nearest first, among those that pass ``filter``.

        Without ``wait``, raises ``IndexBusy`` rather than wait for a write in progress. With
        ``with_attributes`` each hit carries its item's attributes.

        A filter is applied inside the graph walk; when it keeps few items (settings:
        ``exact_search_max_fraction``, ``exact_search_max_count``) or the walk would be long
        (``max_graph_steps``), the matching items are searched exactly instead. A quantized
        graph returns ``rescore_factor`` times ``k`` candidates, which are ranked again by
        their full-precision vectors.
        """
        s = self._settings
        query = checked_query(self.spec, vector)
        if not is_int(k) or not 1 <= k <= s.max_k:
            raise OutOfRange(f"k must be between 1 and {s.max_k}, got {k!r}")
        if ef is not None and (not is_int(ef) or not 1 <= ef <= s.max_ef):
            raise OutOfRange(f"ef must be between 1 and {s.max_ef}, got {ef!r}")
        conditions = parse_filter(filter, s.filter_limits())
        ef = min(s.max_ef, max(k, ef or max(s.ef_search, math.ceil(s.ef_per_k * k))))
        # hnswlib's ef belongs to the graph, so the lock pins it; faiss takes it per search.
        with self._lock.read(ef if self._graph.shared_ef else None, wait=wait):
            if not self._row_of:
                return SearchResult([], Strategy.EMPTY, 0)
            mask = None
            candidates = self.count
            if conditions:
                mask = self._attributes.match(conditions) & self._live
                candidates = int(np.count_nonzero(mask))
                if not candidates:
                    return SearchResult([], Strategy.EMPTY, 0)
            if not self._graph.ready or self._exact_is_cheaper(candidates, ef):
                return self._exact(query[0], k, mask, candidates, with_attributes)
            k = min(k, candidates)
            if mask is not None and self._graph.filter_support is FilterSupport.NATIVE:
                # hnswlib's filtered walk keeps going until ef *matching* nodes are found;
                # faiss counts every node it visits. Scaled, both walk as far (same recall).
                ef = min(s.max_ef, math.ceil(ef * self.count / candidates))
            quantized = self.spec.quantization is not Quantization.NONE
            wanted = min(candidates, math.ceil(k * s.rescore_factor)) if quantized else k
            try:
                rows, scores = self._graph.search(query, wanted, max(ef, wanted), mask)
            except GraphShort:
                return self._exact(query[0], k, mask, candidates, with_attributes)
            if quantized:
                rows, scores = exact_top_k(
                    self._vectors, self._sq_norms, np.sort(rows), query[0], k, self.metric
                )
            strategy = Strategy.GRAPH if mask is None else Strategy.FILTERED_GRAPH
            hits = self._make_hits(rows.tolist(), scores.tolist(), with_attributes)
            return SearchResult(hits, strategy, candidates)

    def _exact_is_cheaper(self, candidates: int, ef: int) -> bool:
        s = self._settings
        if candidates <= s.exact_search_max_count:
            return True
        fraction = candidates / self.count
        if fraction <= s.exact_search_max_fraction or ef / fraction > s.max_graph_steps:
            return True
        # candidates distances against (ef / fraction) steps of `ratio` distances each.
        return candidates * fraction < s.exact_search_cost_ratio * ef

    def _exact(
        self,
        query: np.ndarray,
        k: int,
        mask: np.ndarray | None,
        candidates: int,
        with_attributes: bool = False,
    ) -> SearchResult:
        rows = np.flatnonzero(self._live if mask is None else mask)
        top, scores = exact_top_k(self._vectors, self._sq_norms, rows, query, k, self.metric)
        return SearchResult(
            self._make_hits(top.tolist(), scores.tolist(), with_attributes),
            Strategy.EXACT,
            candidates,
        )

    def _make_hits(self, rows: list[int], scores: list[float], with_attributes: bool) -> list[Hit]:
        if with_attributes:
            return [
                Hit(self._ids[row], float(score), self._attributes.get(row))
                for row, score in zip(rows, scores, strict=True)
            ]
        return [Hit(self._ids[row], float(score)) for row, score in zip(rows, scores, strict=True)]

    # ---- checks ---------------------------------------------------------------------------

    def _stored_form(self, matrix: np.ndarray) -> np.ndarray:
        # Unit vectors for cosine, here and in the graph: exact search is then a dot product.
        if self.metric is Metric.COSINE:
            return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix

    # ---- snapshots ------------------------------------------------------------------------

    @contextmanager
    def state(self) -> Iterator[IndexState]:
        """The index's parts, for a snapshot. Searches go on meanwhile (a graph's save only
        reads); writes wait."""
        with self._lock.frozen():
            yield IndexState(
                graph=self._graph,
                capacity=self.capacity,
                ids=self._ids[: self._next_row],
                attributes=self._attributes.rows()[: self._next_row],
                vectors=self._vectors[: self._next_row],
            )

    @classmethod
    def from_state(
        cls,
        spec: IndexSpec,
        state: IndexState,
        settings: QueryNodeSettings | None = None,
        revision: int = 0,
    ) -> VectorIndex:
        """An index around a loaded graph and the arrays saved with it."""
        index = cls.__new__(cls)
        index.spec = spec
        index._settings = settings or QueryNodeSettings()
        index._graph = state.graph
        capacity = state.capacity
        rows = len(state.ids)
        if rows > capacity or state.vectors.shape != (rows, spec.dim):
            raise InvalidSpec(
                f"snapshot of {spec.name!r} v{spec.model_version} is inconsistent: "
                f"{rows} rows, vectors {state.vectors.shape}, capacity {capacity}"
            )
        index._setup(capacity)
        index._revision = revision
        index._next_row = rows
        index._ids[:rows] = state.ids
        index._vectors[:rows] = state.vectors
        index._sq_norms[:rows] = np.einsum("ij,ij->i", state.vectors, state.vectors)
        index._attributes = AttributeStore.from_rows(state.attributes, capacity)
        for row, item_id in enumerate(state.ids):
            if item_id is not None:
                index._row_of[item_id] = row
                index._live[row] = True
        index._free = [row for row in range(rows) if state.ids[row] is None]
        return index

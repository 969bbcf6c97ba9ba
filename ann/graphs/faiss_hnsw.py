"""faiss's HNSW behind the ``Graph`` interface: filters checked in native code, and 8-bit
scalar-quantized vectors (``quantization: int8``).

faiss ids are positions in insertion order and its HNSW cannot replace or delete a vector, so
rows map to faiss ids: an update appends a new id and retires the old one, a delete retires
it. Every search passes a bitmap of the ids that may answer (live, and allowed by the filter)
through ``IDSelectorBitmap``, which faiss checks in C++ as it walks the graph: no Python call
per visited node. Retired ids still take room; when they outnumber the live ones the index
builds a new graph from the live vectors beside this one (``rebuilt``) and swaps it in.

int8: each dimension is mapped linearly onto 0..255 between its minimum and maximum, trained
on the first ``train_size`` vectors (and again on every compaction); until then the graph is
not ``ready`` and the index answers exactly. The index rescores a quantized graph's candidates
with the full-precision vectors it keeps.

hamming: an ``IndexBinaryHNSW`` over packed codes, dim / 8 bytes a vector (faiss asks for a dim
that is a multiple of 8; the spec refuses others). It is the same ``faiss::HNSW`` walk with a
Hamming distance computer: ids are insertion positions here too (no ``add_with_ids``, no
``remove_ids``), so rows map and retire as above, and its ``search`` hands
``SearchParametersHNSW`` (efSearch, and the ``IDSelectorBitmap``) to that walk, so filters stay
native (faiss 1.15's IndexBinaryHNSW.cpp; the conformance suite's filtered cases check it).
Its distances are int32 counts of differing bits.

ef is a parameter of each search (no shared state), so searches with different ef run at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Self

import faiss
import numpy as np

from nrtrec.ann.graphs.base import FilterSupport, Graph, GraphMemory, GraphShort
from nrtrec.schemas.query_api import Backend, Metric, Quantization
from nrtrec.schemas.snapshot import GRAPH

if TYPE_CHECKING:
    from nrtrec.ann.spec import IndexSpec

# Beside graph.bin: the row of each faiss id, which ids are live, and the vectors waiting for
# a quantized graph's training.
ROWS = "graph-rows.npz"
# A quantized graph trains its ranges on this many vectors before it takes any.
TRAIN_SIZE = 1_000
# Retired ids are rebuilt away once they are this many and outnumber the live ones.
COMPACT_MIN_RETIRED = 1_000


class FaissGraph(Graph):
    backend = Backend.FAISS
    filter_support = FilterSupport.NATIVE
    shared_ef = False

    def __init__(
        self,
        spec: IndexSpec,
        index: faiss.IndexHNSW | faiss.IndexBinaryHNSW,
        row_of_id: np.ndarray,
        live: np.ndarray,
        capacity: int,
    ):
        self._spec = spec
        self._index = index
        self._binary = spec.metric is Metric.HAMMING
        # By faiss id (the first ``_ids`` entries; room to grow beyond, so that a one-item
        # write does not copy them): the row it holds, and whether it is that row's vector now.
        self._ids = len(row_of_id)
        self._row_of_id_store = row_of_id
        self._live_store = live
        self._id_of_row = np.full(capacity, -1, np.int64)
        current = np.flatnonzero(live)
        self._id_of_row[row_of_id[current]] = current
        self._retired = int(len(live) - len(current))
        # Vectors waiting for a quantized graph's training, by row.
        self._pending: dict[int, np.ndarray] = {}
        self._live_bits: np.ndarray | None = None

    @property
    def _row_of_id(self) -> np.ndarray:
        return self._row_of_id_store[: self._ids]

    @property
    def _live(self) -> np.ndarray:
        return self._live_store[: self._ids]

    @classmethod
    def create(cls, spec: IndexSpec, capacity: int) -> Self:
        return cls(spec, _new_index(spec), np.zeros(0, np.int64), np.zeros(0, bool), capacity)

    @classmethod
    def load(cls, spec: IndexSpec, folder: Path, capacity: int) -> Self:
        # read_index hands back the concrete class; a downcast_index wrapper would not own it.
        binary = spec.metric is Metric.HAMMING
        index = (faiss.read_index_binary if binary else faiss.read_index)(str(folder / GRAPH))
        with np.load(folder / ROWS, allow_pickle=False) as saved:
            row_of_id, live = saved["row_of_id"], saved["live"]
            pending_rows, pending = saved["pending_rows"], saved["pending"]
        if len(row_of_id) != index.ntotal or len(live) != index.ntotal:
            raise ValueError(f"{folder / ROWS} does not match {GRAPH}'s {index.ntotal} vectors")
        graph = cls(spec, index, row_of_id.astype(np.int64), live.astype(bool), capacity)
        graph._pending = dict(zip(pending_rows.tolist(), pending, strict=True))
        return graph

    def save(self, folder: Path) -> list[str]:
        write = faiss.write_index_binary if self._binary else faiss.write_index
        write(self._index, str(folder / GRAPH))
        pending_rows = np.fromiter(self._pending, np.int64, len(self._pending))
        pending = (
            np.stack(list(self._pending.values()))
            if self._pending
            else np.zeros((0, self._spec.dim), np.float32)
        )
        np.savez(
            folder / ROWS,
            row_of_id=self._row_of_id,
            live=self._live,
            pending_rows=pending_rows,
            pending=pending,
        )
        return [GRAPH, ROWS]

    @property
    def capacity(self) -> int:
        return len(self._id_of_row)

    @property
    def size(self) -> int:
        return self._index.ntotal + len(self._pending)

    # ---- writes ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._index.is_trained

    def add(self, rows: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        if not self._index.is_trained:
            self._retire(rows)
            waiting = dict(self._pending)
            waiting.update(zip(rows.tolist(), vectors, strict=True))
            if len(waiting) < TRAIN_SIZE:
                self._pending = waiting
                return
            rows = np.fromiter(waiting, np.int64, len(waiting))
            vectors = np.stack(list(waiting.values()))
            # Kept until the training and the add succeed: a failure loses nothing.
            self._index.train(np.ascontiguousarray(vectors, np.float32))
        first = self._index.ntotal
        # omp_set_num_threads sets this thread's count only; searches run on other threads.
        faiss.omp_set_num_threads(threads if threads >= 1 else os.cpu_count() or 1)
        try:
            self._index.add(self._encode(vectors))
        finally:
            faiss.omp_set_num_threads(1)
        if self._index.ntotal != first + len(rows):
            raise RuntimeError(f"faiss added {self._index.ntotal - first} of {len(rows)} vectors")
        # Only now the old vectors of these rows retire: a failed add left them serving.
        self._pending.clear()
        self._retire(rows)
        self._append(rows.astype(np.int64))
        self._id_of_row[rows] = np.arange(first, first + len(rows), dtype=np.int64)
        self._live_bits = None

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        if self._binary:  # checked 0/1 values, 8 to a byte as IndexBinary takes them
            return np.packbits(vectors != 0, axis=1)
        return np.ascontiguousarray(vectors, np.float32)

    def _append(self, rows: np.ndarray) -> None:
        end = self._ids + len(rows)
        if end > len(self._row_of_id_store):
            room = max(end, 2 * len(self._row_of_id_store), 1024)
            self._row_of_id_store = np.resize(self._row_of_id_store, room)
            self._live_store = np.resize(self._live_store, room)
        self._row_of_id_store[self._ids : end] = rows
        self._live_store[self._ids : end] = True
        self._ids = end

    def remove(self, rows: np.ndarray) -> None:
        self._retire(rows)
        for row in rows.tolist():
            self._pending.pop(row, None)

    def _retire(self, rows: np.ndarray) -> None:
        ids = self._id_of_row[rows]
        ids = ids[ids >= 0]
        if len(ids):
            self._live[ids] = False
            self._id_of_row[rows] = -1
            self._retired += len(ids)
            self._live_bits = None

    def resize(self, capacity: int) -> None:
        extra = capacity - len(self._id_of_row)
        if extra > 0:
            self._id_of_row = np.concatenate([self._id_of_row, np.full(extra, -1, np.int64)])

    def needs_compaction(self) -> bool:
        live = len(self._live) - self._retired
        return self._retired >= COMPACT_MIN_RETIRED and self._retired > live

    def rebuilt(self, rows: np.ndarray, vectors: np.ndarray, threads: int) -> FaissGraph:
        graph = FaissGraph.create(self._spec, self.capacity)
        if len(rows) >= TRAIN_SIZE and not graph._index.is_trained:
            # Trained on every live vector, not only the first ones the old graph saw.
            graph._index.train(np.ascontiguousarray(vectors, np.float32))
        if len(rows):
            graph.add(rows, vectors, threads)
        return graph

    # ---- search ---------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, k: int, ef: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._spec.metric is Metric.COSINE:
            query = query / np.linalg.norm(query, axis=1, keepdims=True)
        bits = self._bits(allowed)
        # faiss's wrappers keep the bits alive in the selector and the selector in params.
        selector = None if bits is None else faiss.IDSelectorBitmap(bits)
        params = faiss.SearchParametersHNSW(efSearch=max(ef, k), sel=selector)
        distances, ids = self._index.search(self._encode(query), k, params=params)
        ids, distances = ids[0], distances[0]
        if len(ids) < k or ids[-1] < 0:
            raise GraphShort(f"the graph walk found {int(np.count_nonzero(ids >= 0))} of {k}")
        rows = self._row_of_id[ids]
        if self._spec.metric is Metric.L2:
            return rows, np.sqrt(np.maximum(distances, 0.0))
        if self._binary:
            return rows, distances.astype(np.float32)  # int32 bit counts
        return rows, distances

    def _bits(self, allowed: np.ndarray | None) -> np.ndarray | None:
        # IDSelectorBitmap reads bit (id & 7) of byte (id >> 3): numpy's little bit order.
        if allowed is None:
            if not self._retired:
                return None
            if self._live_bits is None:
                self._live_bits = np.packbits(self._live, bitorder="little")
            return self._live_bits
        return np.packbits(self._live & allowed[self._row_of_id], bitorder="little")

    def memory(self) -> GraphMemory:
        int8 = self._spec.quantization is Quantization.INT8
        # The graph's code of a vector: one byte a dimension (int8), a bit (hamming), or float32.
        if self._binary:
            vectors = self._spec.dim / 8
        else:
            vectors = float(self._spec.dim if int8 else self._spec.dim * 4)
        # The id maps beside faiss: row by id (8), live flag (1), id by row (8).
        maps = 17
        n = self._index.ntotal
        if not n:  # nothing to measure yet: level 0's 2M neighbour ids, offset and level
            return GraphMemory(vectors=vectors, links=float(2 * self._spec.M * 4 + 12 + maps))
        hnsw = self._index.hnsw  # the index's lock keeps writers (and a swap) out meanwhile
        # Neighbour ids (int32), each node's offset into them (8) and level (4).
        links = (hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4) / n
        return GraphMemory(vectors=vectors, links=float(links + maps))


def _new_index(spec: IndexSpec) -> faiss.IndexHNSW | faiss.IndexBinaryHNSW:
    if spec.metric is Metric.HAMMING:
        binary = faiss.IndexBinaryHNSW(spec.dim, spec.M)
        binary.hnsw.efConstruction = spec.ef_construction
        return binary
    metric = faiss.METRIC_L2 if spec.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT
    if spec.quantization is Quantization.INT8:
        index = faiss.IndexHNSWSQ(spec.dim, faiss.ScalarQuantizer.QT_8bit, spec.M, metric)
    else:
        index = faiss.IndexHNSWFlat(spec.dim, spec.M, metric)
    index.hnsw.efConstruction = spec.ef_construction
    return index

"""The interface every ANN library behind a ``VectorIndex`` implements: a ``Graph``.

A graph holds vectors by row number (the index's row, see ``ann.index``) and answers the rows
nearest a query, with scores in the index's terms (l2: the distance; hamming: the number of
differing bits; ip and cosine: the similarity). It knows nothing of string ids, attributes or
locks: the index keeps those, the full-precision vectors (for exact search, rescoring and
look-ups) and the choice of strategy.

What a library cannot do, its class says, and the index works around it:
- ``filter_support``: whether an allowed-rows mask is checked in native code (a bitmap the
  library reads itself) or by a Python call per visited node (hnswlib's binding);
- ``shared_ef``: whether ``ef`` belongs to the graph (hnswlib: searches sharing the graph must
  agree on it; ``IndexLock`` pins it) or to each query;
- ``ready``: false while a quantized graph waits for enough vectors to train on; the index
  answers exactly until then.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np

from nrtrec.schemas.query_api import Backend

if TYPE_CHECKING:
    from nrtrec.ann.spec import IndexSpec


class FilterSupport(StrEnum):
    # The library reads a bitmap of allowed rows in its own code while it walks the graph.
    NATIVE = "native"
    # The library calls a Python function for every node it visits.
    CALLBACK = "callback"


class GraphShort(Exception):
    """The walk found fewer than ``k`` rows (a graph cut off by deletions, or a filter that
    keeps few of the nodes it reached); exact search cannot miss, so the index uses it."""


@dataclass(frozen=True)
class GraphMemory:
    """Bytes per live vector that the graph itself holds, by part."""

    vectors: float  # the graph's copy of each vector, or its quantized code
    links: float  # neighbour lists and per-node bookkeeping

    @property
    def total(self) -> float:
        return self.vectors + self.links


class Graph(ABC):
    backend: ClassVar[Backend]
    filter_support: ClassVar[FilterSupport]
    shared_ef: ClassVar[bool]

    @classmethod
    @abstractmethod
    def create(cls, spec: IndexSpec, capacity: int) -> Self:
        """An empty graph for ``capacity`` rows (it grows with ``resize``)."""

    @classmethod
    @abstractmethod
    def load(cls, spec: IndexSpec, folder: Path, capacity: int) -> Self:
        """The graph ``save`` wrote into ``folder``."""

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write the graph into ``folder``; returns the names of the files written."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Rows the graph has room for."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Vectors the graph holds, removed ones that still take room included."""

    @abstractmethod
    def add(self, rows: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        """Insert ``vectors`` (unit length for cosine) at ``rows``; a row that holds a vector
        already gets the new one. ``threads`` -1: every core."""

    @abstractmethod
    def remove(self, rows: np.ndarray) -> None:
        """Take ``rows`` out of every later search."""

    @abstractmethod
    def resize(self, capacity: int) -> None:
        """Make room for rows up to ``capacity``."""

    def set_ef(self, ef: int) -> None:
        """Only for ``shared_ef`` graphs: the ``ef`` of every search until the next call."""
        del ef  # a graph that takes ef per search has nothing to set

    @abstractmethod
    def search(
        self, query: np.ndarray, k: int, ef: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows to ``query`` (shape (1, dim)) among ``allowed`` (a bool mask
        over rows; None: every row), nearest first, and their scores. Raises ``GraphShort``
        when the walk finds fewer than ``k``."""

    @abstractmethod
    def memory(self) -> GraphMemory:
        """What the graph holds per live vector."""

    @property
    def ready(self) -> bool:
        return True

    def needs_compaction(self) -> bool:
        """Whether removed rows take enough room that the graph should be ``rebuilt``."""
        return False

    def rebuilt(self, rows: np.ndarray, vectors: np.ndarray, threads: int) -> Graph:
        """A new graph of the same spec and capacity holding only ``rows`` (this one is left
        as it is: searches go on using it while the new one is built)."""
        raise NotImplementedError

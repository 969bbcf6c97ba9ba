"""The indexes a node serves, keyed by (name, model_version).

A name has one index per encoder version; a search without a version goes to the newest one
the node has, so a version goes live the moment its index is added, and the previous one keeps
answering callers that ask for it by number until it is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.query_node.errors import IndexExists, IndexNotFound

IndexKey = tuple[str, int]


class IndexRegistry:
    """Thread-safe map of live indexes; reads take no lock (a dict lookup is atomic)."""

    def __init__(self, settings: QueryNodeSettings | None = None):
        self.settings = settings or QueryNodeSettings()
        self._indexes: dict[IndexKey, VectorIndex] = {}
        self._changing = threading.Lock()

    def create(self, spec: IndexSpec) -> VectorIndex:
        """A new empty index for ``spec``; ``IndexExists`` if that version is there already."""
        with self._changing:
            if spec.key in self._indexes:
                raise IndexExists(spec.name, spec.model_version)
            index = VectorIndex(spec, self.settings)
            self._indexes = {**self._indexes, spec.key: index}
            return index

    def add(self, index: VectorIndex) -> None:
        """Register a built or loaded index; ``IndexExists`` if its version is taken."""
        with self._changing:
            if index.spec.key in self._indexes:
                raise IndexExists(index.name, index.model_version)
            self._indexes = {**self._indexes, index.spec.key: index}

    def swap(self, index: VectorIndex) -> VectorIndex | None:
        """Put ``index`` in place of its version's current one, atomically; returns the old.

        Searches that already hold the old index finish on it; every later one sees the new.
        """
        with self._changing:
            old = self._indexes.get(index.spec.key)
            self._indexes = {**self._indexes, index.spec.key: index}
            return old

    def get(self, name: str, model_version: int | None = None) -> VectorIndex:
        """The index for ``name`` at ``model_version``, or its newest version when None."""
        indexes = self._indexes
        if model_version is not None:
            index = indexes.get((name, model_version))
            if index is None:
                raise IndexNotFound(name, model_version)
            return index
        versions = [v for (n, v) in indexes if n == name]
        if not versions:
            raise IndexNotFound(name)
        return indexes[(name, max(versions))]

    def versions(self, name: str) -> list[int]:
        return sorted(v for (n, v) in self._indexes if n == name)

    def remove(self, name: str, model_version: int | None = None) -> list[VectorIndex]:
        """Drop one version, or every version of ``name`` when None; ``IndexNotFound`` if none."""
        with self._changing:
            keys = [
                key for key in self._indexes if key[0] == name and model_version in (None, key[1])
            ]
            if not keys:
                raise IndexNotFound(name, model_version)
            removed = [self._indexes[key] for key in keys]
            self._indexes = {k: v for k, v in self._indexes.items() if k not in keys}
            return removed

    def __contains__(self, key: object) -> bool:
        return key in self._indexes

    def __iter__(self) -> Iterator[VectorIndex]:
        """Every index, by name then version."""
        indexes = self._indexes
        return iter([indexes[key] for key in sorted(indexes)])

    def __len__(self) -> int:
        return len(self._indexes)

"""The query node: its indexes, their snapshots, and the Kafka offsets they reflect.

This is the one object the HTTP API, the command line and the ``item-deltas`` consumer share.
Whoever applies deltas advances ``offsets`` ({"topic:partition": next offset}) after applying
them; snapshots record it, and ``restore`` hands back where to resume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nrtrec.ann import IndexSpec, SearchResult, Snapshot, SnapshotStore, StoredItem, VectorIndex
from nrtrec.core.settings import Settings
from nrtrec.query_node.errors import IndexExists
from nrtrec.query_node.registry import IndexKey, IndexRegistry
from nrtrec.schemas.filters import Filter
from nrtrec.schemas.query_api import Backend, Metric, Quantization
from nrtrec.schemas.snapshot import offset_key

log = logging.getLogger(__name__)


def data_dir(settings: Settings) -> Path:
    return settings.query_node.data_dir or settings.run_dir / "query-node"


class QueryNode:
    def __init__(
        self,
        settings: Settings,
        registry: IndexRegistry | None = None,
        snapshots: SnapshotStore | None = None,
    ):
        self.settings = settings
        self.registry = registry or IndexRegistry(settings.query_node)
        self.snapshots = snapshots or SnapshotStore(data_dir(settings), settings.query_node)
        self.offsets: dict[str, int] = {}
        # Revision of each index at its last snapshot, to skip saving unchanged ones.
        self._saved: dict[IndexKey, int] = {}
        # Per index, the offsets it is known to reflect already (its restored snapshot's): a
        # replay that starts earlier, for another index's sake, skips what this one holds.
        self._floors: dict[IndexKey, dict[str, int]] = {}
        # Versions held but not served yet (``CreateIndexRequest.serving``): listed as such
        # until promoted. Kept beside the indexes, not in them: a snapshot swapped in during a
        # rollout replaces the index object, not its state.
        self.building: set[IndexKey] = set()

    # ---- indexes --------------------------------------------------------------------------

    def create_index(
        self,
        name: str,
        model_version: int,
        dim: int,
        metric: Metric | str,
        *,
        M: int | None = None,
        ef_construction: int | None = None,
        max_elements: int | None = None,
        backend: Backend | str | None = None,
        quantization: Quantization | str | None = None,
        serving: bool = True,
    ) -> tuple[VectorIndex, bool]:
        """The index, and whether it is new. Creating one that exists with the same spec is a
        no-op (PUT is idempotent), whatever ``serving`` says; with another dim, metric, backend,
        quantization or HNSW parameter, ``IndexExists``. A new index with ``serving=False`` is
        building until :meth:`promote`.
        """
        defaults = self.settings.query_node
        if quantization is None and metric == Metric.HAMMING:
            # Bits take no int8 codes: the node's default does not apply (asked for, refused).
            quantization = Quantization.NONE
        spec = IndexSpec(
            name=name,
            model_version=model_version,
            dim=dim,
            metric=metric,
            M=M or defaults.M,
            ef_construction=ef_construction or defaults.ef_construction,
            max_elements=max_elements or defaults.max_elements,
            backend=backend or defaults.backend,
            quantization=quantization or defaults.quantization,
        )
        try:
            index = self.registry.create(spec)
        except IndexExists:
            existing = self.registry.get(name, model_version).spec
            asked = {
                "dim": dim,
                "metric": spec.metric,
                "M": M,
                "ef_construction": ef_construction,
                "backend": backend and spec.backend,
                "quantization": quantization and spec.quantization,
            }
            differs = [
                f"{key} {getattr(existing, key)} (asked {value})"
                for key, value in asked.items()
                if value is not None and getattr(existing, key) != value
            ]
            if differs:
                raise IndexExists(name, model_version, ", ".join(differs)) from None
            return self.registry.get(name, model_version), False
        if not serving:
            self.building.add(spec.key)
        return index, True

    def serving(self, name: str, model_version: int) -> bool:
        return (name, model_version) not in self.building

    def promote(self, name: str, model_version: int) -> VectorIndex:
        """Serve a building version (a no-op for a served one); ``IndexNotFound`` if absent."""
        index = self.registry.get(name, model_version)
        if index.spec.key in self.building:
            self.building.discard(index.spec.key)
            self._saved.pop(index.spec.key, None)  # the next snapshot records the new state
        return index

    def hold_back(self, name: str, model_version: int) -> None:
        """Mark a version building (a node learning so from ``index-declarations``)."""
        if (name, model_version) not in self.building:
            self.building.add((name, model_version))
            self._saved.pop((name, model_version), None)

    def drop_index(self, name: str, model_version: int | None = None) -> list[IndexKey]:
        """Remove one version (or all of ``name``) and its snapshots, so a restart does not
        bring it back."""
        removed = self.registry.remove(name, model_version)
        self.snapshots.remove(name, model_version)
        keys = [index.spec.key for index in removed]
        for key in keys:
            self.building.discard(key)
            self._saved.pop(key, None)
            self._floors.pop(key, None)
        return keys

    def floor(self, name: str, model_version: int, topic: str, partition: int) -> int:
        """The first offset of ``topic:partition`` that index ``name`` v``model_version`` does
        not hold yet, as far as the node knows (0: it may lack anything)."""
        return self._floors.get((name, model_version), {}).get(offset_key(topic, partition), 0)

    def hold_floors(
        self, offsets: Mapping[str, int], *, except_key: IndexKey | None = None
    ) -> None:
        """Every index (but ``except_key``) reflects ``offsets``: a replay from lower ones
        (a swapped-in index's) leaves them as they are."""
        for index in self.registry:
            if index.spec.key != except_key:
                self._floors[index.spec.key] = {**self._floors.get(index.spec.key, {}), **offsets}

    def index(self, name: str, model_version: int | None = None) -> VectorIndex:
        return self.registry.get(name, model_version)

    def indexes(self) -> list[VectorIndex]:
        return list(self.registry)

    # ---- items ----------------------------------------------------------------------------

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]] | np.ndarray,
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        model_version: int | None = None,
    ) -> tuple[VectorIndex, int]:
        index = self.registry.get(name, model_version)
        return index, index.upsert(ids, vectors, attributes)

    def delete(
        self, name: str, ids: Sequence[str], *, model_version: int | None = None
    ) -> tuple[VectorIndex, int]:
        index = self.registry.get(name, model_version)
        return index, index.delete(ids)

    def search(
        self,
        name: str,
        vector: Sequence[float] | np.ndarray,
        k: int = 10,
        *,
        ef: int | None = None,
        filter: Mapping[str, Any] | Filter | None = None,
        model_version: int | None = None,
        wait: bool = True,
        with_attributes: bool = False,
    ) -> tuple[VectorIndex, SearchResult]:
        """Search ``name`` at ``model_version``, or at its newest version when None."""
        index = self.registry.get(name, model_version)
        result = index.search(
            vector, k, ef=ef, filter=filter, wait=wait, with_attributes=with_attributes
        )
        return index, result

    def items(
        self, name: str, ids: Sequence[str], *, model_version: int | None = None
    ) -> tuple[VectorIndex, list[StoredItem]]:
        """The stored items of ``ids`` (unknown ones left out) at ``model_version``, or at the
        newest version when None."""
        index = self.registry.get(name, model_version)
        return index, index.items(ids)

    # ---- snapshots ------------------------------------------------------------------------

    def snapshot(
        self,
        name: str | None = None,
        model_version: int | None = None,
        *,
        offsets: Mapping[str, int] | None = None,
        only_changed: bool = False,
    ) -> list[Snapshot]:
        """Save every index (or those of ``name``, or one version) with ``offsets`` (default:
        ``self.offsets``). With ``only_changed``, indexes unchanged since their last snapshot
        are skipped."""
        if name is None:
            targets = list(self.registry)
        elif model_version is None:
            targets = [self.registry.get(name, v) for v in self.registry.versions(name)]
            if not targets:
                self.registry.get(name)  # raises IndexNotFound
        else:
            targets = [self.registry.get(name, model_version)]
        saved = []
        for index in targets:
            revision = index.revision
            if only_changed and self._saved.get(index.spec.key) == revision:
                continue
            saved.append(
                self.snapshots.save(
                    index,
                    self.offsets if offsets is None else offsets,
                    serving=self.serving(index.name, index.model_version),
                )
            )
            self._saved[index.spec.key] = revision
        return saved

    def restore(self) -> list[Snapshot]:
        """Load the newest snapshot of every index version on disk that is not served yet; one
        saved while building stays building (a rollout promotes it, not a restart).

        ``offsets`` becomes, per partition, the smallest offset of the loaded snapshots (and
        leaves out partitions some of them lack): replaying from there is safe, because an
        upsert replaces and a delete of a missing id is a no-op.
        """
        loaded = []
        for index, snapshot in self.snapshots.load_all():
            if index.spec.key in self.registry:
                continue
            self.registry.add(index)
            if not snapshot.serving:
                self.building.add(index.spec.key)
            self._saved[index.spec.key] = index.revision
            self._floors[index.spec.key] = dict(snapshot.offsets)
            loaded.append(snapshot)
            log.info("loaded %s v%d: %d items", index.name, index.model_version, index.count)
        if loaded and not self.offsets:
            partitions = set.intersection(*(set(s.offsets) for s in loaded))
            self.offsets = {p: min(s.offsets[p] for s in loaded) for p in sorted(partitions)}
        return loaded

    def close(self) -> None:
        """Save what changed since the last snapshot; one failing index does not stop others."""
        for index in list(self.registry):
            try:
                self.snapshot(index.name, index.model_version, only_changed=True)
            except Exception:
                log.exception("could not save %s v%d", index.name, index.model_version)

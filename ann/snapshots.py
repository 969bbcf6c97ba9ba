"""Snapshots of indexes on disk: ``<data_dir>/<name>/<model_version>/<snapshot_id>/``, in the
format ``schemas.snapshot`` describes (what a bulk build writes and a query node loads).

A snapshot is written into a hidden temporary folder beside its final place and renamed into
it, so a crash leaves either a whole snapshot or none; ids sort by time, the newest readable one
is loaded and the last few are kept. Each carries the Kafka offsets ({"topic:partition":
offset}) its caller says the index reflects, so a delta consumer can resume from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from nrtrec.ann.errors import AnnError, SnapshotError
from nrtrec.ann.graphs import graph_class
from nrtrec.ann.index import IndexState, VectorIndex
from nrtrec.ann.spec import IndexSpec
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.snapshot import (
    ITEMS,
    MANIFEST,
    SNAPSHOT_FORMAT,
    VECTORS,
    SnapshotManifest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """One saved snapshot, as its ``meta.json`` describes it."""

    name: str
    model_version: int
    snapshot_id: str
    path: Path
    count: int
    created: str
    offsets: dict[str, int] = field(default_factory=dict)
    serving: bool = True


class SnapshotStore:
    def __init__(self, data_dir: Path, settings: QueryNodeSettings | None = None):
        self.data_dir = Path(data_dir)
        self.settings = settings or QueryNodeSettings()
        # One save at a time per store: two saves of one index would race for the id.
        self._saving = threading.Lock()

    # ---- save -----------------------------------------------------------------------------

    def save(
        self, index: VectorIndex, offsets: Mapping[str, int] | None = None, *, serving: bool = True
    ) -> Snapshot:
        """Write a snapshot of ``index``; writes to it wait meanwhile, searches do not.
        ``serving=False`` records that the index is held back (building)."""
        offsets = {str(k): int(v) for k, v in (offsets or {}).items()}
        home = self._home(index.name, index.model_version)
        with self._saving:
            home.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=home))
            try:
                with index.state() as state:
                    count = sum(1 for i in state.ids if i is not None)
                    revision, capacity = index.revision, index.capacity
                    graph_files = state.graph.save(work)
                    np.save(work / VECTORS, state.vectors)
                    _write_json(work / ITEMS, {"ids": state.ids, "attributes": state.attributes})
                snapshot_id = self._new_id(home)
                digests = {name: _sha256(work / name) for name in (*graph_files, VECTORS, ITEMS)}
                meta = SnapshotManifest(
                    format=SNAPSHOT_FORMAT,
                    snapshot_id=snapshot_id,
                    created=datetime.now(UTC).isoformat(),
                    spec=index.spec.to_record(),
                    capacity=capacity,
                    count=count,
                    revision=revision,
                    offsets=offsets,
                    serving=serving,
                    files=digests,
                )
                (work / MANIFEST).write_text(meta.model_dump_json(), encoding="utf-8")
                for path in work.iterdir():
                    _fsync(path)
                final = home / snapshot_id
                os.rename(work, final)
                _fsync(home)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            self._prune(home)
        return _snapshot(meta, final)

    def _new_id(self, home: Path) -> str:
        # Sortable by time; a second save in the same microsecond waits for the next one.
        while True:
            snapshot_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            if not (home / snapshot_id).exists():
                return snapshot_id
            time.sleep(1e-6)

    def _prune(self, home: Path) -> None:
        for old in self._ids(home)[self.settings.snapshots_keep :]:
            shutil.rmtree(home / old, ignore_errors=True)
        for temp in home.glob(".tmp-*"):
            # Left by a crash; no save of ours is running (we hold the save lock).
            shutil.rmtree(temp, ignore_errors=True)

    # ---- read -----------------------------------------------------------------------------

    def keys(self) -> list[tuple[str, int]]:
        """The (name, model_version) pairs that have at least one snapshot."""
        found = []
        if not self.data_dir.is_dir():
            return found
        for name_dir in sorted(self.data_dir.iterdir()):
            if not name_dir.is_dir() or name_dir.name.startswith("."):
                continue
            for version_dir in sorted(name_dir.iterdir()):
                if version_dir.name.isdigit() and self._ids(version_dir):
                    found.append((name_dir.name, int(version_dir.name)))
        return sorted(found)

    def snapshots(self, name: str, model_version: int) -> list[Snapshot]:
        """Snapshots of one index version, newest first (unreadable ones left out)."""
        home = self._home(name, model_version)
        snapshots = []
        for snapshot_id in self._ids(home):
            path = home / snapshot_id
            with contextlib.suppress(OSError, ValueError):
                snapshots.append(_snapshot(_read_manifest(path), path))
        return snapshots

    def load(self, name: str, model_version: int) -> tuple[VectorIndex, Snapshot]:
        """The newest snapshot that reads back whole; older ones are tried when one fails."""
        home = self._home(name, model_version)
        problems = []
        for snapshot_id in self._ids(home):
            path = home / snapshot_id
            try:
                return self.load_path(path)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError, AnnError) as e:
                log.warning("snapshot %s unreadable, trying an older one: %s", path, e)
                problems.append(f"{snapshot_id}: {e}")
        raise SnapshotError(
            f"no readable snapshot of {name!r} v{model_version} in {home}"
            + (f" ({'; '.join(problems)})" if problems else "")
        )

    def load_all(self) -> list[tuple[VectorIndex, Snapshot]]:
        """The newest snapshot of every index version on disk; unreadable ones are logged."""
        loaded = []
        for name, version in self.keys():
            try:
                loaded.append(self.load(name, version))
            except SnapshotError as e:
                log.error("%s", e)
        return loaded

    def load_path(self, path: Path) -> tuple[VectorIndex, Snapshot]:
        """One snapshot folder, wherever it was written (a bulk backfill's, say)."""
        meta = _read_manifest(path)
        for name, digest in meta.files.items():
            if _sha256(path / name) != digest:
                raise SnapshotError(f"{path / name} does not match its sha256 in {MANIFEST}")
        spec = IndexSpec.from_record(meta.spec)
        graph = graph_class(spec.backend).load(spec, path, meta.capacity)
        items = _read_json(path / ITEMS)
        state = IndexState(
            graph=graph,
            capacity=meta.capacity,
            ids=items["ids"],
            attributes=items["attributes"],
            vectors=np.load(path / VECTORS, allow_pickle=False),
        )
        index = VectorIndex.from_state(spec, state, self.settings, revision=0)
        if index.count != meta.count:
            raise SnapshotError(f"{path}: {index.count} items, {MANIFEST} says {meta.count}")
        return index, _snapshot(meta, path)

    # ---- remove ---------------------------------------------------------------------------

    def remove(self, name: str, model_version: int | None = None) -> None:
        """Delete the snapshots of one version, or of every version of ``name``."""
        target = self.data_dir / name
        if model_version is not None:
            target = target / str(model_version)
        with self._saving:
            shutil.rmtree(target, ignore_errors=True)

    # ---- paths ----------------------------------------------------------------------------

    def _home(self, name: str, model_version: int) -> Path:
        # IndexSpec has checked the name: no separators, no leading dot.
        return self.data_dir / name / str(int(model_version))

    @staticmethod
    def _ids(home: Path) -> list[str]:
        """Snapshot folders of one index version, newest first."""
        if not home.is_dir():
            return []
        return sorted(
            (p.name for p in home.iterdir() if p.is_dir() and not p.name.startswith(".")),
            reverse=True,
        )


def _read_manifest(path: Path) -> SnapshotManifest:
    try:
        meta = SnapshotManifest.model_validate_json((path / MANIFEST).read_bytes())
    except ValidationError as e:
        raise SnapshotError(f"{path / MANIFEST} is not a snapshot manifest: {e}") from None
    if meta.format != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: snapshot format {meta.format!r}, want {SNAPSHOT_FORMAT}")
    return meta


def _snapshot(meta: SnapshotManifest, path: Path) -> Snapshot:
    return Snapshot(
        name=meta.spec.name,
        model_version=meta.spec.model_version,
        snapshot_id=meta.snapshot_id,
        path=path,
        count=meta.count,
        created=meta.created,
        offsets=dict(meta.offsets),
        serving=meta.serving,
    )


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"), allow_nan=True)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

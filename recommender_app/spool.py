"""Records the broker did not acknowledge in time, kept on disk until it does.

The spool is one append-only file of JSON lines: ``{"event": {...}}`` when a record is spooled
(written and fsynced before the app relies on it), ``{"done": "<id>"}`` once Kafka has it. A
killed app leaves the file; the next one sends what is not done. The file is rewritten (to a
temporary one, renamed over it) when everything in it is done, so it stays small.

One spool per topic: click events (by ``event_id``) and impressions (by ``request_id``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class SpoolFailed(Exception):
    """The record could not be written to the spool (the disk is full, say)."""


class EventSpool(Generic[R]):
    """Spooled records of one model, each known by ``id_of(record)``."""

    def __init__(self, path: Path, model: type[R], id_of: Callable[[R], str]):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._model = model
        self._id_of = id_of
        self._lock = threading.Lock()
        # Record id -> (record, when it was spooled; 0 for what an earlier process left).
        self._pending: dict[str, tuple[R, float]] = {}
        self._read()

    def id_of(self, record: R) -> str:
        return self._id_of(record)

    def add(self, record: R) -> None:
        """Keep ``record`` until ``done``; on disk (fsynced) when this returns."""
        self.add_many([record])

    def add_many(self, records: Iterable[R]) -> None:
        """``add`` for several records at the cost of one write and one fsync."""
        records = list(records)
        if not records:
            return
        with self._lock:
            self._append([{"event": r.model_dump(mode="json", exclude_none=True)} for r in records])
            now = time.monotonic()
            for record in records:
                self._pending[self._id_of(record)] = (record, now)

    def done(self, record_id: str) -> None:
        with self._lock:
            if self._pending.pop(record_id, None) is None:
                return
            if self._pending:
                self._append([{"done": record_id}])
                return
            # Nothing left: start the file afresh rather than let it grow.
            temp = self.path.with_name(f".{self.path.name}.tmp")
            temp.write_bytes(b"")
            os.replace(temp, self.path)

    def pending(self, older_than_s: float = 0.0, limit: int | None = None) -> list[R]:
        """What is not done, of what was spooled at least ``older_than_s`` ago: the oldest
        ``limit`` (all without one)."""
        now = time.monotonic()
        with self._lock:
            old = (r for r, at in self._pending.values() if now - at >= older_than_s)
            return list(itertools.islice(old, limit))

    def __len__(self) -> int:
        return len(self._pending)

    def _append(self, records: list[dict]) -> None:
        """Lines, fsynced; the caller holds the lock."""
        data = b"".join(
            (json.dumps(record, separators=(",", ":")) + "\n").encode() for record in records
        )
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise SpoolFailed(f"cannot write {self.path}: {e}") from e

    def _read(self) -> None:
        if not self.path.exists():
            return
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
            try:
                record = json.loads(line)
                if "event" in record:
                    spooled = self._model.model_validate(record["event"])
                    self._pending[self._id_of(spooled)] = (spooled, 0.0)
                else:
                    self._pending.pop(str(record["done"]), None)
            except (ValueError, KeyError, ValidationError) as e:
                # A line cut short by a crash mid-write: the only line that can be, the last.
                log.warning("%s:%d unreadable, skipped: %s", self.path, number, e)
        if self._pending:
            log.info("%d spooled record(s) to send from %s", len(self._pending), self.path)

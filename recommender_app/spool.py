"""Records the broker did not acknowledge in time, kept on disk until it does.

The spool is one append-only file of JSON lines: ``{"event": {...}}`` when a record is spooled
(written and fsynced before the app relies on it), ``{"done": "<id>"}`` once Kafka has it. A
killed app leaves the file; the next one sends what is not done. The file is rewritten (to a
temporary one, renamed over it) when everything in it is done, so it stays small.

One spool per topic: click events (by ``event_id``) and impressions (by ``request_id``). In
memory a spooled record is kept as it will be sent (key and encoded value, in a plain tuple),
not as its model: a tuple of strings and bytes is one the garbage collector stops tracking.
Kept as models, the 20k impressions an app may hold while Kafka is down were some 100k tracked
objects, and each of the app's full collections cost 15-55 ms of CPU.
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
from typing import Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from nrtrec.schemas import encode

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


class SpoolFailed(Exception):
    """The record could not be written to the spool (the disk is full, say)."""


class Spooled(NamedTuple):
    """One spooled record as it goes to Kafka."""

    id: str
    key: str
    # ``schemas.encode`` of the record.
    value: bytes


class EventSpool(Generic[R]):
    """Spooled records of one model, each known by ``id_of(record)`` and sent with the key
    ``key_of(record)``."""

    def __init__(
        self,
        path: Path,
        model: type[R],
        id_of: Callable[[R], str],
        key_of: Callable[[R], str],
    ):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._model = model
        self._id_of = id_of
        self._key_of = key_of
        self._lock = threading.Lock()
        # Record id -> (key, value, when it was spooled; 0 for what an earlier process left).
        # An exact tuple of atoms, not a ``Spooled``: only those the collector untracks.
        self._pending: dict[str, tuple[str, bytes, float]] = {}
        self._read()

    def _spooled(self, record: R) -> Spooled:
        return Spooled(self._id_of(record), self._key_of(record), encode(record))

    def add(self, record: R) -> None:
        """Keep ``record`` until ``done``; on disk (fsynced) when this returns."""
        self.add_many([record])

    def add_many(self, records: Iterable[R]) -> None:
        """``add`` for several records at the cost of one write and one fsync."""
        spooled = [self._spooled(r) for r in records]
        if not spooled:
            return
        with self._lock:
            # The lines hold the encoded value as it is: {"event": <value>}.
            self._append([b'{"event":' + r.value + b"}\n" for r in spooled])
            now = time.monotonic()
            for record in spooled:
                self._pending[record.id] = (record.key, record.value, now)

    def done(self, record_id: str) -> None:
        with self._lock:
            if self._pending.pop(record_id, None) is None:
                return
            if self._pending:
                self._append([json.dumps({"done": record_id}).encode() + b"\n"])
                return
            # Nothing left: start the file afresh rather than let it grow.
            temp = self.path.with_name(f".{self.path.name}.tmp")
            temp.write_bytes(b"")
            os.replace(temp, self.path)

    def pending(self, older_than_s: float = 0.0, limit: int | None = None) -> list[Spooled]:
        """What is not done, of what was spooled at least ``older_than_s`` ago: the oldest
        ``limit`` (all without one)."""
        now = time.monotonic()
        with self._lock:
            old = (
                Spooled(record_id, key, value)
                for record_id, (key, value, at) in self._pending.items()
                if now - at >= older_than_s
            )
            return list(itertools.islice(old, limit))

    def __len__(self) -> int:
        return len(self._pending)

    def _append(self, lines: list[bytes]) -> None:
        """Lines, fsynced; the caller holds the lock."""
        data = b"".join(lines)
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
                    spooled = self._spooled(self._model.model_validate(record["event"]))
                    self._pending[spooled.id] = (spooled.key, spooled.value, 0.0)
                else:
                    self._pending.pop(str(record["done"]), None)
            except (ValueError, KeyError, ValidationError) as e:
                # A line cut short by a crash mid-write: the only line that can be, the last.
                log.warning("%s:%d unreadable, skipped: %s", self.path, number, e)
        if self._pending:
            log.info("%d spooled record(s) to send from %s", len(self._pending), self.path)

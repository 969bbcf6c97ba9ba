"""Click events the broker did not acknowledge in time, kept on disk until it does.

The spool is one append-only file of JSON lines: ``{"event": {...}}`` when an event is spooled
(written and fsynced before the app answers 202), ``{"done": "<event_id>"}`` once Kafka has it.
A killed app leaves the file; the next one sends what is not done. The file is rewritten (to a
temporary one, renamed over it) when everything in it is done, so it stays small.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from nrtrec.schemas import ClickEvent

log = logging.getLogger(__name__)


class SpoolFailed(Exception):
    """The event could not be written to the spool (the disk is full, say)."""


class EventSpool:
    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Event id -> (event, when it was spooled; 0 for what an earlier process left).
        self._pending: dict[str, tuple[ClickEvent, float]] = {}
        self._read()

    def add(self, event: ClickEvent) -> None:
        """Keep ``event`` until ``done``; on disk (fsynced) when this returns."""
        with self._lock:
            self._append({"event": event.model_dump(mode="json")})
            self._pending[event.event_id] = (event, time.monotonic())

    def done(self, event_id: str) -> None:
        with self._lock:
            if self._pending.pop(event_id, None) is None:
                return
            if self._pending:
                self._append({"done": event_id})
                return
            # Nothing left: start the file afresh rather than let it grow.
            temp = self.path.with_name(f".{self.path.name}.tmp")
            temp.write_bytes(b"")
            os.replace(temp, self.path)

    def pending(self, older_than_s: float = 0.0) -> list[ClickEvent]:
        """What is not done, of what was spooled at least ``older_than_s`` ago."""
        now = time.monotonic()
        with self._lock:
            return [e for e, at in self._pending.values() if now - at >= older_than_s]

    def __len__(self) -> int:
        return len(self._pending)

    def _append(self, record: dict) -> None:
        """One line, fsynced; the caller holds the lock."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
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
                    event = ClickEvent.model_validate(record["event"])
                    self._pending[event.event_id] = (event, 0.0)
                else:
                    self._pending.pop(str(record["done"]), None)
            except (ValueError, KeyError, ValidationError) as e:
                # A line cut short by a crash mid-write: the only line that can be, the last.
                log.warning("%s:%d unreadable, skipped: %s", self.path, number, e)
        if self._pending:
            log.info("%d spooled click event(s) to send from %s", len(self._pending), self.path)

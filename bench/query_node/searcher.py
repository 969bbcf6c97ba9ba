"""The search-during-upsert section's load: ``Searcher``, a process of its own (no GIL shared
with the upserts) that searches the node over its own keep-alive connection at a fixed rate
while told to, and hands back every search's times."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

# Untimed searches when the process starts: the connection is open and warm before any window.
WARMUP = 20


@dataclass(frozen=True)
class Search:
    """One search, in ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process)."""

    scheduled_ns: int  # its place on the fixed schedule
    sent_ns: int
    done_ns: int
    ok: bool

    @property
    def response_ns(self) -> int:
        """From its scheduled time: a search sent late behind a slow one counts the wait."""
        return self.done_ns - self.scheduled_ns

    @property
    def service_ns(self) -> int:
        """From its actual send: the node's answer to this search alone."""
        return self.done_ns - self.sent_ns


def _worker(url: str, path: str, bodies: list[dict[str, Any]], rate: float, conn: Any) -> None:
    """Waits for ``start``, then sends search i at ``start + i / rate`` (open loop: a late search
    goes at once, the schedule does not slip) until ``stop``; then sends those scheduled before
    the stop that are still to go (a window that ends behind schedule leaves none out), and
    answers with the searches."""
    import httpx

    client = httpx.Client(
        base_url=url,
        timeout=60.0,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )
    for i in range(WARMUP):
        client.post(path, json=bodies[i % len(bodies)]).raise_for_status()
    conn.send("ready")
    gc.disable()
    i = 0
    while (command := conn.recv()) == "start":
        searches: list[tuple[int, int, int, bool]] = []
        start, interval = time.monotonic_ns(), round(1e9 / rate)
        j, stop_ns = 0, None
        while True:
            scheduled = start + j * interval
            if stop_ns is None and conn.poll(max(0.0, (scheduled - time.monotonic_ns()) / 1e9)):
                conn.recv()  # the stop
                stop_ns = time.monotonic_ns()
            if stop_ns is not None and scheduled > stop_ns:
                break
            sent = time.monotonic_ns()
            try:
                ok = client.post(path, json=bodies[i % len(bodies)]).is_success
            except httpx.HTTPError:
                ok = False
            searches.append((scheduled, sent, time.monotonic_ns(), ok))
            i += 1
            j += 1
        conn.send(searches)
    assert command == "quit", command
    client.close()


class Searcher:
    """The searching process: ``start()`` a window of searches, ``stop()`` it and get them."""

    def __init__(self, url: str, path: str, bodies: list[dict[str, Any]], rate: float):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_worker, args=(url, path, bodies, rate, child), name="searcher", daemon=True
        )
        self._proc.start()
        child.close()
        if not self._conn.poll(120) or self._conn.recv() != "ready":
            raise RuntimeError("the searcher process did not start")

    def start(self) -> None:
        self._conn.send("start")

    def stop(self) -> list[Search]:
        self._conn.send("stop")
        return [Search(*s) for s in self._conn.recv()]

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send("quit")
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

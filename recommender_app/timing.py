"""Per-request time budget and where the time went (the ``Server-Timing`` header).

A request has one deadline (``settings.app.deadline_s``); each call to the store or the gateway
gets the smaller of its own timeout and what is left, so a slow dependency costs at most its
share and the answer still comes in time, with what is available.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Stages reported in Server-Timing, in order; "app" is the rest of the request's time.
STAGES = ("store", "search")


@dataclass
class Timings:
    """Seconds spent per stage, and the request's deadline."""

    deadline_s: float
    start: float = field(default_factory=time.perf_counter)
    spent: dict[str, float] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline_s - (time.perf_counter() - self.start)

    def budget(self, limit_s: float) -> float:
        """The timeout for the next call: its own limit, or what is left when that is less
        (never below 1 ms, so a call that is due anyway fails fast rather than not at all)."""
        return max(0.001, min(limit_s, self.remaining()))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0

    def header(self) -> str:
        """``store;dur=0.41, search;dur=1.90, app;dur=0.52, total;dur=2.83`` (milliseconds)."""
        total = time.perf_counter() - self.start
        parts = [(name, self.spent.get(name, 0.0)) for name in STAGES]
        app = max(0.0, total - sum(seconds for _, seconds in parts))
        parts += [("app", app), ("total", total)]
        return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in parts)

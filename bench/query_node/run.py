"""``Bench``: what the sections of one run share, and how they time paths against each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hnswlib
from rich.console import Console
from rich.progress import Progress

from bench.common import timed_rounds
from bench.query_node.data import Data
from bench.query_node.floor import FloorProcess
from bench.query_node.node import NodeProcess
from bench.query_node.params import Params
from nrtrec.ann import VectorIndex
from nrtrec.core.settings import QueryNodeSettings

# Progress, logs and the summary go to stderr.
console = Console(stderr=True)


@dataclass
class Bench:
    """What the sections share: the build section fills in ``raw`` and ``index``; each
    section's result lands in ``results`` under its name, for the sections after it."""

    params: Params
    settings: QueryNodeSettings
    data: Data
    progress: Progress
    raw: hnswlib.Index | None = None
    index: VectorIndex | None = None
    node: NodeProcess | None = None
    floor: FloorProcess | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def timed(
        self,
        what: str,
        paths: dict[str, Callable[[int], Any]],
        queries: int,
        after_warmup: Callable[[], None] | None = None,
    ) -> tuple[dict[str, list[int]], dict[str, list[Any]]]:
        """Query i goes through every path in turn (the order rotating per query) after
        ``--warmup`` untimed queries, with a progress bar ``what``: ``common.timed_rounds``.
        Returns nanoseconds and answers by path."""
        return timed_rounds(
            paths,
            queries,
            self.params.warmup,
            after_warmup=after_warmup,
            progress=self.progress,
            what=what,
        )

"""What a search answers, and what an index hands out of itself."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np


class Strategy(StrEnum):
    """How a search was answered; reported in metrics."""

    GRAPH = "graph"
    FILTERED_GRAPH = "filtered_graph"
    EXACT = "exact"
    EMPTY = "empty"


class Hit(NamedTuple):
    # A tuple, not a frozen dataclass: a search makes k of them, and a frozen dataclass's
    # __init__ (object.__setattr__ per field) cost ~1 us each, 12 % of a k=10 search.
    id: str
    score: float
    # Only when the search asked for them (``with_attributes``): read under the same lock as
    # the hit, so an item and its attributes are never from two different writes.
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item as the index holds it: the stored vector (unit length for cosine)."""

    id: str
    vector: np.ndarray
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    strategy: Strategy
    # Items that passed the filter (every live item without one).
    candidates: int

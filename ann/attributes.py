"""Per-index item attributes, indexed so that a filter becomes a row mask without a scan.

Strings, booleans and null go to an inverted index (value -> rows); numbers go to one float
array per attribute, so ranges and numeric equality are vectorised numpy comparisons. Lists and
objects are stored and returned but match no condition.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from nrtrec.schemas.filters import Condition, Filter, Op

_MISSING = np.nan


class AttributeStore:
    """Attributes by row (the index's label); not thread-safe: the index's lock guards it."""

    def __init__(self, capacity: int):
        self._rows: list[dict[str, Any] | None] = [None] * capacity
        # attribute -> (value type, value) -> rows; the type keeps True apart from 1.
        self._postings: dict[str, dict[tuple[type, Any], set[int]]] = defaultdict(
            lambda: defaultdict(set)
        )
        self._numbers: dict[str, np.ndarray] = {}
        self._present: dict[str, np.ndarray] = {}

    @property
    def capacity(self) -> int:
        return len(self._rows)

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self._rows)
        if extra <= 0:
            return
        self._rows.extend([None] * extra)
        for name, values in self._numbers.items():
            self._numbers[name] = np.concatenate([values, np.full(extra, _MISSING)])
        for name, present in self._present.items():
            self._present[name] = np.concatenate([present, np.zeros(extra, bool)])

    def get(self, row: int) -> dict[str, Any]:
        return dict(self._rows[row] or {})

    def set(self, row: int, attributes: Mapping[str, Any]) -> None:
        self.clear(row)
        if not attributes:
            return
        self._rows[row] = dict(attributes)
        for name, value in attributes.items():
            self._present_array(name)[row] = True
            if _is_number(value):
                self._number_array(name)[row] = value
            elif _is_key(value):
                self._postings[name][(type(value), value)].add(row)

    def clear(self, row: int) -> None:
        old = self._rows[row]
        if not old:
            return
        for name, value in old.items():
            self._present[name][row] = False
            if _is_number(value):
                self._numbers[name][row] = _MISSING
            elif _is_key(value):
                values = self._postings[name]
                key = (type(value), value)
                values[key].discard(row)
                if not values[key]:
                    del values[key]
        self._rows[row] = None

    def match(self, filter: Filter) -> np.ndarray:
        """A bool mask over rows of the items that satisfy every condition."""
        mask = np.ones(self.capacity, bool)
        for condition in filter.conditions:
            mask &= self._condition_mask(condition)
            if not mask.any():
                break
        return mask

    def _condition_mask(self, c: Condition) -> np.ndarray:
        name = c.attribute
        if c.op is Op.EQ:
            return self._equal(name, c.operand)
        if c.op is Op.NE:
            return self._present.get(name, self._nothing()) & ~self._equal(name, c.operand)
        if c.op is Op.IN:
            mask = self._nothing()
            for value in c.operand:
                mask |= self._equal(name, value)
            return mask
        values = self._numbers.get(name)
        if values is None:
            return self._nothing()
        # NaN (absent or not a number) compares False, so such rows never match a range.
        with np.errstate(invalid="ignore"):
            if c.op is Op.GT:
                return values > c.operand
            if c.op is Op.GTE:
                return values >= c.operand
            if c.op is Op.LT:
                return values < c.operand
            return values <= c.operand

    def _equal(self, name: str, value: Any) -> np.ndarray:
        if _is_number(value):
            values = self._numbers.get(name)
            return values == value if values is not None else self._nothing()
        mask = self._nothing()
        rows = self._postings.get(name, {}).get((type(value), value))
        if rows:
            mask[np.fromiter(rows, np.int64, len(rows))] = True
        return mask

    def _nothing(self) -> np.ndarray:
        return np.zeros(self.capacity, bool)

    def _number_array(self, name: str) -> np.ndarray:
        if name not in self._numbers:
            self._numbers[name] = np.full(self.capacity, _MISSING)
        return self._numbers[name]

    def _present_array(self, name: str) -> np.ndarray:
        if name not in self._present:
            self._present[name] = np.zeros(self.capacity, bool)
        return self._present[name]

    # What a snapshot keeps: the attributes by row; the indexes are rebuilt on load.
    def rows(self) -> list[dict[str, Any] | None]:
        return list(self._rows)

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any] | None], capacity: int) -> AttributeStore:
        store = cls(max(capacity, len(rows)))
        for row, attributes in enumerate(rows):
            if attributes:
                store.set(row, attributes)
        return store


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_key(value: object) -> bool:
    return value is None or isinstance(value, str | bool)

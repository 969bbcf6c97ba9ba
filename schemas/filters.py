"""The attribute filter grammar of DESIGN.md: parsed once into conditions, in one place.

JSON form (the query API's ``filter``): ``{"category": "toys"}`` is equality; an object value
holds operators, all of which must hold: ``{"price": {"gte": 10, "lt": 50}}``, ``{"location":
{"in": ["US", "CA"]}}``. Every condition needs the attribute to be present, so ``ne`` does not
match items that lack the attribute. Numbers compare as numbers (``1 == 1.0``); strings,
booleans and null equal only their own kind (``True`` is not ``1``); a range never matches
what is not a number.

Query-string form (the recommender app's ``?category=Comedy&price.lt=20``): ``filter_from_query``
turns it into the same ``Filter``. The query node evaluates a ``Filter`` over its attribute
indexes (vectorised); ``Filter.matches`` is the same rule for one item (the app's fallback
lists), and the tests hold the two to each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from nrtrec.schemas.errors import InvalidFilter

Scalar = str | int | float | bool | None


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    IN = "in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"


RANGE_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})


@dataclass(frozen=True, slots=True)
class Condition:
    attribute: str
    op: Op
    # A tuple of scalars for ``in``, one scalar otherwise (a finite number for range ops).
    operand: Any

    def holds(self, attributes: Mapping[str, Any]) -> bool:
        if self.attribute not in attributes:
            return False
        value = attributes[self.attribute]
        if self.op is Op.EQ:
            return _equal(value, self.operand)
        if self.op is Op.NE:
            return not _equal(value, self.operand)
        if self.op is Op.IN:
            return any(_equal(value, o) for o in self.operand)
        if not _is_number(value):
            return False
        if self.op is Op.GT:
            return value > self.operand
        if self.op is Op.GTE:
            return value >= self.operand
        if self.op is Op.LT:
            return value < self.operand
        return value <= self.operand


@dataclass(frozen=True, slots=True)
class FilterLimits:
    """How wide a filter may be (``query_node.max_filter_*`` in settings). Its depth is fixed
    by the grammar: an attribute's operands are scalars, or a list of them for ``in``."""

    max_conditions: int = 32
    max_values: int = 256

    def check(self, conditions: Iterable[Condition]) -> None:
        conditions = tuple(conditions)
        if len(conditions) > self.max_conditions:
            raise InvalidFilter(
                f"{len(conditions)} conditions; a filter holds at most {self.max_conditions}"
            )
        for c in conditions:
            if c.op is Op.IN and len(c.operand) > self.max_values:
                raise InvalidFilter(
                    f"{c.attribute}: 'in' with {len(c.operand)} values; at most {self.max_values}"
                )


@dataclass(frozen=True, slots=True)
class Filter:
    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, attributes: Mapping[str, Any] | None) -> bool:
        """Whether one item's ``attributes`` satisfy every condition."""
        if not self.conditions:
            return True
        if attributes is None:
            return False
        return all(c.holds(attributes) for c in self.conditions)

    def to_json(self) -> dict[str, Any] | None:
        """The JSON form (None for no filter); ``parse_filter`` reads it back to this."""
        if not self.conditions:
            return None
        out: dict[str, Any] = {}
        for c in self.conditions:
            operand = list(c.operand) if c.op is Op.IN else c.operand
            spec = out.setdefault(c.attribute, {})
            spec[c.op.value] = operand
        return {name: spec["eq"] if list(spec) == ["eq"] else spec for name, spec in out.items()}


def parse_filter(
    raw: Mapping[str, Any] | Filter | None, limits: FilterLimits | None = None
) -> Filter:
    """A ``Filter`` from its JSON form; raises ``InvalidFilter`` naming the bad part, or the
    limit it passes."""
    if isinstance(raw, Filter):
        if limits is not None:
            limits.check(raw.conditions)
        return raw
    if raw is None:
        return Filter()
    if not isinstance(raw, Mapping):
        raise InvalidFilter(f"a filter is an object of attribute conditions, got {_kind(raw)}")
    conditions: list[Condition] = []
    for attribute, spec in raw.items():
        if not isinstance(attribute, str) or not attribute:
            raise InvalidFilter("attribute names are non-empty strings")
        if isinstance(spec, Mapping):
            if not spec:
                raise InvalidFilter(f"{attribute}: empty condition; give at least one operator")
            conditions.extend(_condition(attribute, op, operand) for op, operand in spec.items())
        elif isinstance(spec, list | tuple):
            raise InvalidFilter(f"{attribute}: a list needs an operator: {{'in': [...]}}")
        else:
            conditions.append(_condition(attribute, Op.EQ.value, spec))
        if limits is not None:
            # Checked as it grows: a huge filter is refused before it is all parsed.
            limits.check(conditions)
    return Filter(tuple(conditions))


def _condition(attribute: str, op_name: object, operand: object) -> Condition:
    try:
        op = Op(op_name)
    except ValueError:
        known = ", ".join(o.value for o in Op)
        raise InvalidFilter(
            f"{attribute}: unknown operator {op_name!r}; use one of {known}"
        ) from None
    if op is Op.IN:
        if not isinstance(operand, list | tuple):
            raise InvalidFilter(f"{attribute}: 'in' takes a list, got {_kind(operand)}")
        return Condition(attribute, op, tuple(_scalar(attribute, op, v) for v in operand))
    if op in RANGE_OPS:
        if not _is_number(operand) or not math.isfinite(operand):
            raise InvalidFilter(f"{attribute}: {op.value!r} takes a finite number, got {operand!r}")
        return Condition(attribute, op, float(operand))
    return Condition(attribute, op, _scalar(attribute, op, operand))


def _scalar(attribute: str, op: Op, value: object) -> Scalar:
    if value is None or isinstance(value, str | bool):
        return value
    if _is_number(value):
        if not math.isfinite(value):
            raise InvalidFilter(f"{attribute}: {op.value!r} takes finite numbers, got {value!r}")
        return value
    raise InvalidFilter(
        f"{attribute}: {op.value!r} compares with strings, numbers, booleans or null, "
        f"got {_kind(value)}"
    )


def _is_number(value: object) -> bool:
    # bool is an int in Python but not a number in a filter.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _equal(value: object, operand: object) -> bool:
    if _is_number(value) and _is_number(operand):
        return value == operand
    return type(value) is type(operand) and value == operand


# ---- the query-string form (the recommender app's attribute filters) ---------------------------

AttributeType = Literal["string", "number"]


def filter_from_query(
    params: Iterable[tuple[str, str]],
    attributes: Mapping[str, AttributeType],
    limits: FilterLimits | None = None,
) -> Filter:
    """The filter of query parameters (name, value pairs, repeats allowed) on the attributes
    ``attributes`` names with their type; raises ``InvalidFilter`` saying what is wrong.

    ``category=Comedy`` is equality, repeated it is ``in``; ``location.in=US,CA``,
    ``category.ne=Horror``, ``price.gte=10&price.lt=50``; a number attribute's values are read as
    numbers (``year=1995``), and range operators apply to number attributes only.
    """
    ops: dict[str, dict[Op, Any]] = {}
    equal: dict[str, list[Any]] = {}
    for name, raw in params:
        attribute, _, op_name = name.partition(".")
        if attribute not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise InvalidFilter(f"unknown filter {name!r}; filterable attributes: {known}")
        try:
            op = Op(op_name or "eq")
        except ValueError:
            known = ", ".join(o.value for o in Op)
            raise InvalidFilter(
                f"{name}: unknown operator {op_name!r}; use one of {known}"
            ) from None
        kind = attributes[attribute]
        if op in RANGE_OPS and kind != "number":
            raise InvalidFilter(f"{name}: {op} needs a number attribute; {attribute} is a string")
        if raw == "":
            raise InvalidFilter(f"{name}: empty value")
        if op is Op.EQ:
            equal.setdefault(attribute, []).append(_query_value(name, raw, kind))
            continue
        given = ops.setdefault(attribute, {})
        if op in given:
            raise InvalidFilter(f"{name} is given twice")
        if op is Op.IN:
            values = [_query_value(name, part, kind) for part in raw.split(",") if part != ""]
            if not values:
                raise InvalidFilter(f"{name}: no values")
            given[op] = tuple(values)
        else:
            given[op] = _query_value(name, raw, kind)
    conditions: list[Condition] = []
    for attribute, values in equal.items():
        if attribute in ops:
            raise InvalidFilter(f"{attribute}: give either {attribute}= or operators, not both")
        if len(values) == 1:
            conditions.append(Condition(attribute, Op.EQ, values[0]))
        else:
            conditions.append(Condition(attribute, Op.IN, tuple(values)))
    for attribute, given in ops.items():
        conditions.extend(Condition(attribute, op, operand) for op, operand in given.items())
    if limits is not None:
        limits.check(conditions)
    return Filter(tuple(conditions))


def _query_value(name: str, raw: str, kind: AttributeType) -> str | int | float:
    if kind == "string":
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise InvalidFilter(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidFilter(f"{name}: {raw!r} is not a finite number")
    return int(number) if number.is_integer() else number

"""Attribute filters as query parameters, turned into DESIGN's filter grammar.

Every query parameter other than the endpoint's own (``k``) is a condition on an attribute
named in ``settings.app.filter_attributes``:

===========================  ======================================
query                        filter sent to the query nodes
===========================  ======================================
``category=Comedy``          ``{"category": "Comedy"}``
``category=Comedy&category=Drama``  ``{"category": {"in": ["Comedy", "Drama"]}}``
``location.in=US,CA``        ``{"location": {"in": ["US", "CA"]}}``
``category.ne=Horror``       ``{"category": {"ne": "Horror"}}``
``price.gte=10&price.lt=50``  ``{"price": {"gte": 10, "lt": 50}}``
``year=1995``                ``{"year": 1995}`` (a number attribute compares as a number)
===========================  ======================================

Range operators (``gt``, ``gte``, ``lt``, ``lte``) take numbers and apply to number attributes
only. Anything else (an unknown attribute or operator, a value that is not a number where one is
needed, an operator given twice) is the caller's mistake: :class:`BadFilter`, answered 400.
``matches`` evaluates the same filter on attributes in the app (the popular-items fallback).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Filter = dict[str, Any]
AttributeType = Literal["string", "number"]

RANGE_OPS = ("gt", "gte", "lt", "lte")
OPS = ("eq", "ne", "in", *RANGE_OPS)


class BadFilter(ValueError):
    """A filter parameter the app cannot turn into a filter; the message says why."""


def parse_filter(
    params: Iterable[tuple[str, str]], attributes: Mapping[str, AttributeType]
) -> Filter | None:
    """The filter of ``params`` (name, value pairs, repeats allowed), or None when there is
    none. Raises :class:`BadFilter`."""
    ops: dict[str, dict[str, Any]] = {}
    equal: dict[str, list[Any]] = {}
    for name, raw in params:
        attribute, _, op = name.partition(".")
        if attribute not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise BadFilter(f"unknown filter {name!r}; filterable attributes: {known}")
        op = op or "eq"
        if op not in OPS:
            raise BadFilter(f"{name}: unknown operator {op!r}; use one of {', '.join(OPS)}")
        kind = attributes[attribute]
        if op in RANGE_OPS and kind != "number":
            raise BadFilter(f"{name}: {op} needs a number attribute; {attribute} is a string")
        if raw == "":
            raise BadFilter(f"{name}: empty value")
        if op == "eq":
            equal.setdefault(attribute, []).append(_value(name, raw, kind))
            continue
        given = ops.setdefault(attribute, {})
        if op in given:
            raise BadFilter(f"{name} is given twice")
        if op == "in":
            given[op] = [_value(name, part, kind) for part in raw.split(",") if part != ""]
            if not given[op]:
                raise BadFilter(f"{name}: no values")
        else:
            given[op] = _value(name, raw, kind)
    if not ops and not equal:
        return None
    result: Filter = {}
    for attribute, values in equal.items():
        if attribute in ops:
            raise BadFilter(f"{attribute}: give either {attribute}= or operators, not both")
        result[attribute] = values[0] if len(values) == 1 else {"in": values}
    result.update(ops)
    return result


def _value(name: str, raw: str, kind: AttributeType) -> str | int | float:
    if kind == "string":
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise BadFilter(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise BadFilter(f"{name}: {raw!r} is not a finite number")
    return int(number) if number.is_integer() else number


def matches(attributes: Mapping[str, Any] | None, filter: Filter | None) -> bool:
    """Whether ``attributes`` satisfy ``filter``, by the query nodes' rules: every condition
    needs the attribute present; numbers compare as numbers; strings only equal strings."""
    if not filter:
        return True
    if attributes is None:
        return False
    for attribute, spec in filter.items():
        if attribute not in attributes:
            return False
        value = attributes[attribute]
        conditions = spec.items() if isinstance(spec, dict) else [("eq", spec)]
        if not all(_holds(value, op, operand) for op, operand in conditions):
            return False
    return True


def _holds(value: Any, op: str, operand: Any) -> bool:
    if op == "in":
        return any(_equal(value, o) for o in operand)
    if op == "eq":
        return _equal(value, operand)
    if op == "ne":
        return not _equal(value, operand)
    if not _is_number(value):
        return False
    return {
        "gt": value > operand,
        "gte": value >= operand,
        "lt": value < operand,
        "lte": value <= operand,
    }[op]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(value: Any, operand: Any) -> bool:
    if _is_number(value) and _is_number(operand):
        return value == operand
    return type(value) is type(operand) and value == operand

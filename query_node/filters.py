"""The attribute filter grammar of DESIGN.md, parsed once into conditions.

``{"category": "toys"}`` is equality; an object value holds operators, all of which must hold:
``{"price": {"gte": 10, "lt": 50}}``, ``{"location": {"in": ["US", "CA"]}}``. Every condition
needs the attribute to be present, so ``ne`` does not match items that lack the attribute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nrtrec.query_node.errors import InvalidFilter

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


@dataclass(frozen=True, slots=True)
class Filter:
    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)


def parse_filter(raw: Mapping[str, Any] | Filter | None) -> Filter:
    """A ``Filter`` from its JSON form; raises ``InvalidFilter`` naming the bad part."""
    if raw is None or isinstance(raw, Filter):
        return raw or Filter()
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

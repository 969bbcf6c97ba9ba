"""Field types shared by every record."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Not "/": the API's path routes (``/v1/similar/{item_id}``) could not address such an id; not
# control characters (C0, DEL, C1): they break logs, keys and terminals.
_ID_CHAR = r"[^/\x00-\x1f\x7f-\x9f]"
_ID_EDGE = r"[^\s/\x00-\x1f\x7f-\x9f]"
ID_MAX_LENGTH = 256
ID_PATTERN = rf"^{_ID_EDGE}(?:{_ID_CHAR}*{_ID_EDGE})?$"

_ID = re.compile(ID_PATTERN)


def _check_id(value: str) -> str:
    # The common id (printable ASCII, no "/", no edge whitespace) is checked in C; a 1,000-item
    # upsert spent more on the regex than on the rest of its ids' validation.
    if value.isascii() and value.isprintable() and "/" not in value and value.strip() == value:
        return value
    # pydantic's own pattern error would quote the regex; this says the rule.
    if not _ID.match(value):
        raise ValueError('an id has no "/", no control characters and no whitespace at either end')
    return value


Id = Annotated[
    str,
    Field(min_length=1, max_length=ID_MAX_LENGTH, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(_check_id),
]
"""An id is 1 to 256 characters, no "/" and no control characters, no whitespace at either end.
A contract, not a setting: a record one service accepts must be one every other accepts."""

_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
REQUEST_ID_PATTERN = _REQUEST_ID.pattern


def _check_request_id(value: str) -> str:
    if not _REQUEST_ID.match(value):
        raise ValueError("a request_id is the 32 lowercase hex digits an answer of the app gave")
    return value


RequestId = Annotated[
    str,
    Field(min_length=32, max_length=32, json_schema_extra={"pattern": REQUEST_ID_PATTERN}),
    AfterValidator(_check_request_id),
]
"""The id of one list the app served (``uuid4().hex``): its impression's, and its clicks'."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(
            "a name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


Label = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"pattern": _LABEL.pattern}),
    AfterValidator(_check_label),
]
"""A short name an operator chooses: an experiment's, an arm's. It shows in reports and in
metric labels, so no spaces and nothing to escape."""

Count = Annotated[int, Field(strict=True)]
"""An integer request parameter given as a JSON integer: ``"10"``, ``10.0`` and ``true`` are
mistakes, answered 422 rather than read as 10 (or 1)."""

TimestampMs = Annotated[int, Field(ge=0, description="milliseconds since the Unix epoch")]

ModelVersion = Annotated[int, Field(ge=1, description="Triton version of the encoder pair")]

VersionParam = Annotated[
    int, Field(strict=True, ge=1, description="Triton version of the encoder pair")
]
"""``ModelVersion`` in a request body: a JSON integer only (see ``Count``)."""

Vector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]],
    Field(min_length=1, max_length=4096),
]


class Record(BaseModel):
    """Base of records that cross a process boundary: unknown fields are errors, not noise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

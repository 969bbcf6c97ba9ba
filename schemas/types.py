"""Field types shared by every record."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")]
"""An id is a non-empty string without leading or trailing whitespace."""

TimestampMs = Annotated[int, Field(ge=0, description="milliseconds since the Unix epoch")]

ModelVersion = Annotated[int, Field(ge=1, description="Triton version of the encoder pair")]

Vector = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False)]],
    Field(min_length=1, max_length=4096),
]


class Record(BaseModel):
    """Base of records that cross a process boundary: unknown fields are errors, not noise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""Bytes on a topic to validated records and back."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from nrtrec.schemas.errors import InvalidRecord, UnknownTopic
from nrtrec.schemas.events import ClickEvent, ListingEvent
from nrtrec.schemas.records import DeadLetter, Impression, IndexDeclaration, ItemDelta
from nrtrec.schemas.topics import Topic

MODEL_OF_TOPIC: dict[Topic, type[BaseModel]] = {
    Topic.CLICKS: ClickEvent,
    Topic.LISTINGS: ListingEvent,
    Topic.ITEM_DELTAS: ItemDelta,
    Topic.DEAD_LETTERS: DeadLetter,
    Topic.INDEX_DECLARATIONS: IndexDeclaration,
    Topic.IMPRESSIONS: Impression,
}


def model_for(topic: str) -> type[BaseModel]:
    try:
        return MODEL_OF_TOPIC[Topic(topic)]
    except ValueError:
        raise UnknownTopic(f"no record model for topic {topic!r}") from None


M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], value: bytes | str) -> M:
    """Parse and validate one record; raises ``InvalidRecord`` naming every bad field."""
    try:
        return model.model_validate_json(value)
    except ValidationError as e:
        raise InvalidRecord.from_validation_error(model.__name__, e) from None


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=True).encode()


def payload_text(value: bytes | None) -> str:
    """A raw value as text for a dead letter, never failing on bad UTF-8."""
    if value is None:
        return ""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return repr(value)

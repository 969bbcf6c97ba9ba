"""The contract every nrtrec service shares. Imports no other nrtrec package."""

from nrtrec.schemas.codec import decode, encode, model_for, payload_text
from nrtrec.schemas.errors import InvalidRecord, SchemaError, UnknownTopic
from nrtrec.schemas.events import LISTED_AT, Action, ClickEvent, ListingEvent, ListingOp
from nrtrec.schemas.records import (
    DeadLetter,
    Impression,
    IndexDeclaration,
    ItemDelta,
    Source,
    UserVector,
    UserVectors,
    delta_key,
)
from nrtrec.schemas.topics import Topic

__all__ = [
    "LISTED_AT",
    "Action",
    "ClickEvent",
    "DeadLetter",
    "Impression",
    "IndexDeclaration",
    "InvalidRecord",
    "ItemDelta",
    "ListingEvent",
    "ListingOp",
    "SchemaError",
    "Source",
    "Topic",
    "UnknownTopic",
    "UserVector",
    "UserVectors",
    "decode",
    "delta_key",
    "encode",
    "model_for",
    "payload_text",
]

"""What the item tower made of a listing's text, kept so that an update that leaves the text
alone (a new price, another location) is published without encoding it again.

The item job keeps one ``EncodedText`` per item in Flink keyed state: the sha256 of the tower's
input (``listing_text`` of title, category and aspects) and the vector of each model version.
An upsert whose digest matches re-uses those vectors and only its attributes change; any other
upsert is encoded, and its vectors replace the state. Why keyed state, not a look-up of the
stored vector on the query nodes: a delta must carry the whole vector either way
(``item-deltas`` is compacted, and a replica rebuilds from the newest delta of each key), the
state is checkpointed with the listings offsets it reflects, and the job needs no other service
on its path. It costs ``dim * 4`` bytes per item and served version (256 at dim 64).

Because a digest names the text it was made from, a stale state (restored from a checkpoint
older than the last publish) is never wrong, only a miss: its text no longer matches, so the
listing is encoded. That holds because a model version is immutable: new weights are a new
version (``nrtrec models train`` registers one), never a replaced one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from nrtrec.inference.client import listing_text
from nrtrec.schemas import ListingEvent


def text_digest(listing: ListingEvent) -> str:
    text = listing_text(listing.title, listing.category, listing.aspects)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class EncodedText:
    digest: str
    # model version -> the item tower's vector of this text
    vectors: dict[int, np.ndarray] = field(default_factory=dict)

    def vector(self, digest: str, version: int) -> np.ndarray | None:
        """The vector of ``version`` when the text encoded is the one of ``digest``."""
        return self.vectors.get(version) if digest == self.digest else None

    def to_state(self) -> str:
        return json.dumps(
            {
                "digest": self.digest,
                "vectors": {
                    str(v): base64.b64encode(np.asarray(x, "<f4").tobytes()).decode()
                    for v, x in self.vectors.items()
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_state(cls, raw: str | None) -> EncodedText | None:
        if not raw:
            return None
        value = json.loads(raw)
        return cls(
            value["digest"],
            {
                int(v): np.frombuffer(base64.b64decode(x), "<f4")
                for v, x in value["vectors"].items()
            },
        )

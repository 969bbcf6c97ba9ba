"""The item-embedding job's work on one batch: listings in, ``item-deltas`` out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer

from nrtrec.core.kafka import partition_count
from nrtrec.inference.client import BadEncoderInput, Encoder
from nrtrec.schemas import DeadLetter, ItemDelta, ListingEvent, ListingOp, Topic, encode
from nrtrec.streaming.attributes import listing_attributes
from nrtrec.streaming.encoded_texts import EncodedText, text_digest
from nrtrec.streaming.errors import StreamingError


@dataclass(frozen=True)
class PublishReport:
    upserts: int
    deletes: int
    dead_letters: list[DeadLetter]
    versions: list[int]
    # What each upserted item's text encodes to now, for the caller to keep (keyed state).
    encoded: dict[str, EncodedText] = field(default_factory=dict)
    # (listing, version) pairs encoded, and those whose unchanged text re-used a vector.
    encoded_count: int = 0
    reused_count: int = 0


class ItemDeltaPublisher:
    """Publishes one delta per listing and served model version, keyed by item id.

    Every version Triton serves gets the change, so that an index being built for a new
    version stays as current as the live one. Deltas are delivered (flushed) before ``publish``
    returns: the job's checkpoint that follows covers them. A listing whose text is the one in
    ``encoded`` (the caller's record of what it encoded before) is not encoded again: its delta
    carries the vector it had and its new attributes.
    """

    def __init__(
        self,
        encoder: Encoder,
        producer: Producer,
        topic: str = Topic.ITEM_DELTAS,
        listings_topic: str = Topic.LISTINGS,
    ):
        self.encoder = encoder
        self.producer = producer
        self.topic = str(topic)
        self.listings_topic = str(listings_topic)
        # Read from the cluster at the first publish (the broker may not be up at the start).
        self._partitions: int | None = None

    def publish(
        self,
        listings: Mapping[str, ListingEvent],
        versions: list[int] | None = None,
        encoded: Mapping[str, EncodedText] | None = None,
    ) -> PublishReport:
        versions = versions or self.encoder.versions()
        if not versions:
            raise StreamingError("no encoder version is served; load one on Triton")
        encoded = encoded or {}
        upserts = [x for x in listings.values() if x.op is ListingOp.UPSERT]
        deletes = [x for x in listings.values() if x.op is ListingOp.DELETE]
        now = {x.item_id: EncodedText(text_digest(x)) for x in upserts}
        dead: list[DeadLetter] = []
        deltas: list[ItemDelta] = []
        counts = {"encoded": 0, "reused": 0}
        for version in versions:
            stale = []
            for listing in upserts:
                known = encoded.get(listing.item_id)
                digest = now[listing.item_id].digest
                vector = None if known is None else known.vector(digest, version)
                if vector is None:
                    stale.append(listing)
                else:
                    now[listing.item_id].vectors[version] = vector
            counts["reused"] += len(upserts) - len(stale)
            encodable, vectors = self._encode(stale, version, dead)
            counts["encoded"] += len(encodable)
            for listing, vector in zip(encodable, vectors, strict=True):
                now[listing.item_id].vectors[version] = vector
            for listing in upserts:
                vector = now[listing.item_id].vectors.get(version)
                if vector is None:  # the item tower refused it: dead-lettered
                    continue
                deltas.append(
                    ItemDelta(
                        op=ListingOp.UPSERT,
                        item_id=listing.item_id,
                        model_version=version,
                        vector=vector.tolist(),
                        attributes=listing_attributes(listing),
                        source_ts=listing.ts,
                    )
                )
            for listing in deletes:
                deltas.append(
                    ItemDelta(
                        op=ListingOp.DELETE,
                        item_id=listing.item_id,
                        model_version=version,
                        source_ts=listing.ts,
                    )
                )
        errors: list[str] = []
        if self._partitions is None:
            try:
                self._partitions = partition_count(self.producer, self.topic)
            except (KafkaException, ValueError) as e:
                raise StreamingError(f"{self.topic}: {e}; the job retries the batch") from e
        for delta in deltas:
            self.producer.produce(
                self.topic,
                key=delta.key().encode(),
                partition=delta.partition(self._partitions),
                value=encode(delta),
                on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
            )
            self.producer.poll(0)
        left = self.producer.flush(30)
        if left or errors:
            raise StreamingError(
                f"{left} item deltas undelivered, errors: {errors[:3]}; the job retries the batch"
            )
        return PublishReport(
            len(upserts),
            len(deletes),
            dead,
            versions,
            encoded={item: e for item, e in now.items() if e.vectors},
            encoded_count=counts["encoded"],
            reused_count=counts["reused"],
        )

    def _encode(self, listings: list[ListingEvent], version: int, dead: list[DeadLetter]):
        if not listings:
            return [], []
        try:
            return listings, self.encoder.encode_listings(listings, version).vectors
        except BadEncoderInput:
            pass
        # One listing the encoder cannot take must not hold back the rest: find it alone.
        kept, vectors = [], []
        for listing in listings:
            try:
                vectors.append(self.encoder.encode_listings([listing], version).vectors[0])
                kept.append(listing)
            except BadEncoderInput as e:
                payload = listing.model_dump_json(exclude_none=True)
                # Once per listing, whichever version refused it (another may have re-used
                # a stored vector and never seen the text).
                if all(d.payload != payload for d in dead):
                    dead.append(
                        DeadLetter(
                            source_topic=self.listings_topic,
                            error=f"item tower rejected the listing: {e}",
                            payload=payload,
                        )
                    )
        return kept, vectors

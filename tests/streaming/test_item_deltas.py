"""The item job's publisher on a real Kafka and the trained item tower: a listing whose text
is unchanged is published with the vector it had, without the tower; a changed text, a new
version or a lost state is encoded."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from nrtrec.core.datasets import load_movielens
from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.inference.client import LocalEncoder
from nrtrec.schemas import ItemDelta
from nrtrec.streaming.encoded_texts import EncodedText
from nrtrec.streaming.item_deltas import ItemDeltaPublisher
from tests.waiting import collect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def publisher(stack, test_settings: Settings, trained_models):
    bootstrap = stack.kafka()
    topic = f"item-deltas-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2)])[topic].result(30)
    encoder = LocalEncoder(test_settings.inference, trained_models.repository)
    producer = Producer(producer_config(bootstrap, "test-item-deltas"))
    yield ItemDeltaPublisher(encoder, producer, topic), bootstrap, topic
    encoder.close()


def published(bootstrap: str, topic: str, count: int) -> list[ItemDelta]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        messages = collect(consumer, lambda got: len(got) >= count, 30)
    finally:
        consumer.close()
    return [ItemDelta.model_validate_json(m.value()) for m in messages]


def test_unchanged_text_reuses_the_vector_and_changed_text_is_encoded(publisher):
    pub, bootstrap, topic = publisher
    movies = list(load_movielens().movies.values())[:4]
    first = {m.item_id: m.listing(1_000) for m in movies}
    report = pub.publish(first, versions=[1, 2])
    assert (report.encoded_count, report.reused_count) == (8, 0)
    state = {item: EncodedText.from_state(e.to_state()) for item, e in report.encoded.items()}
    assert set(state) == set(first)

    # Price changed for two, the title for one, the fourth unchanged: only the title is encoded.
    a, b, c, d = movies
    second = {
        a.item_id: a.listing(2_000).model_copy(update={"price": 99.5}),
        # When it was first listed, which is not its text: re-used too.
        b.item_id: b.listing(2_000).model_copy(update={"location": "elsewhere", "listed_at": 900}),
        c.item_id: c.listing(2_000).model_copy(update={"title": c.title + " (director's cut)"}),
        d.item_id: d.listing(2_000),
    }
    report = pub.publish(second, versions=[1, 2], encoded=state)
    assert (report.encoded_count, report.reused_count) == (2, 6)
    local = pub.encoder
    for version in (1, 2):
        fresh = local.encode_listings(list(second.values()), version).vectors
        for row, listing in enumerate(second.values()):
            # Re-used or encoded, every vector is the tower's own for the listing's text.
            np.testing.assert_allclose(
                report.encoded[listing.item_id].vectors[version], fresh[row], atol=1e-5
            )
    everything = published(bootstrap, topic, 16)
    assert len(everything) == 16, f"{len(everything)} of 16 deltas came"
    deltas = [x for x in everything if x.source_ts == 2_000]
    assert {(x.item_id, x.model_version) for x in deltas} == {
        (item, v) for item in second for v in (1, 2)
    }
    priced = next(x for x in deltas if x.item_id == a.item_id)
    assert priced.attributes["price"] == 99.5 and "listed_at" not in priced.attributes
    moved = next(x for x in deltas if x.item_id == b.item_id)
    assert moved.attributes["listed_at"] == 900 and moved.attributes["location"] == "elsewhere"

    # A version the state lacks (a new encoder) and an item without state are encoded.
    report = pub.publish({a.item_id: second[a.item_id]}, versions=[1, 2], encoded={
        a.item_id: EncodedText(state[a.item_id].digest, {1: state[a.item_id].vectors[1]})
    })  # fmt: skip
    assert (report.encoded_count, report.reused_count) == (1, 1)
    report = pub.publish({a.item_id: second[a.item_id]}, versions=[1, 2], encoded={})
    assert (report.encoded_count, report.reused_count) == (2, 0)

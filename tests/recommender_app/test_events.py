"""``POST /v1/events``: clicks published to a real Kafka broker, keyed by user id."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from nrtrec.recommender_app import create_app
from nrtrec.schemas import ClickEvent, decode
from tests.conftest import free_port
from tests.fuzzing import refuse_generated_bad_input
from tests.recommender_app.cluster import with_kafka
from tests.recommender_app.topics import make_topic, records_in
from tests.waiting import collect, wait_until

pytestmark = pytest.mark.integration


def consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"app-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    try:
        return collect(consumer, lambda got: len(got) >= n, timeout_s)
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def kafka(stack) -> str:
    return stack.kafka()


@pytest.fixture
def topic(kafka) -> str:
    return make_topic(kafka)


@pytest.fixture
def client(settings, store, kafka, topic):
    settings = with_kafka(settings, kafka)
    settings.topics.clicks = topic
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "Traceback" not in body["detail"]
    return body["detail"]


def test_a_click_is_published_keyed_by_user_after_the_broker_acknowledged(client, kafka, topic):
    before = time.time_ns() // 1_000_000
    r = client.post("/v1/events", json={"user_id": "u1", "item_id": "42"})
    assert r.status_code == 202, r.text
    body = r.json()
    event = body["event"]
    # Filled in: a uuid4, now, and "click".
    assert uuid.UUID(event["event_id"]).version == 4
    assert before <= event["ts"] <= time.time_ns() // 1_000_000
    assert event["action"] == "click" and body["topic"] == topic and body["offset"] >= 0
    full = {"event_id": "e-2", "user_id": "u1", "item_id": "7", "action": "purchase", "ts": 5}
    r = client.post("/v1/events", json=full)
    assert r.status_code == 202 and r.json()["event"] == full
    messages = consume(kafka, topic, 2)
    assert [m.key() for m in messages] == [b"u1", b"u1"]
    assert messages[0].partition() == messages[1].partition() == body["partition"]
    assert [decode(ClickEvent, m.value()) for m in messages] == [
        ClickEvent(**event),
        ClickEvent(**full),
    ]
    assert 'nrtrec_app_events_total{outcome="published"} 2.0' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"item_id": "1"}, "user_id: Field required"),
        ({"user_id": "u", "item_id": "1", "action": "poke"}, "action: Input should be"),
        ({"user_id": "u", "item_id": " 1"}, "item_id: an id has no"),
        ({"user_id": "u/1", "item_id": "1"}, 'user_id: an id has no "/"'),
        ({"user_id": "u", "item_id": "1", "ts": "5"}, "ts: Input should be a valid integer"),
        ({"user_id": "u", "item_id": "1", "ts": -1}, "ts: Input should be greater than"),
        ({"user_id": "u", "item_id": "1", "colour": "red"}, "colour: Extra inputs"),
        ({"user_id": "u", "item_id": "1", "request_id": "r-1"}, "request_id: String should have"),
        ({"user_id": "u", "item_id": "1", "request_id": "A" * 32}, "request_id: a request_id is"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_a_bad_event_is_422_and_not_published(client, body, says):
    assert says in error(client.post("/v1/events", json=body), 422, "invalid_request")


def test_a_click_names_the_list_it_came_from(client, kafka, topic):
    """The homepage sends the ``request_id`` of the answer the item was shown in."""
    request_id = uuid.uuid4().hex
    r = client.post("/v1/events", json={"user_id": "u1", "item_id": "4", "request_id": request_id})
    assert r.status_code == 202, r.text
    assert r.json()["event"]["request_id"] == request_id
    [message] = consume(kafka, topic, 1)
    assert decode(ClickEvent, message.value()).request_id == request_id


def test_a_click_dated_ahead_of_the_clock_is_422_and_not_published(client, kafka, topic):
    """It would stay its user's newest view until its date came; a late one is fine."""
    now = time.time_ns() // 1_000_000
    ahead = {"event_id": "e-ahead", "user_id": "u9", "item_id": "1", "ts": now + 60_000}
    says = error(client.post("/v1/events", json=ahead), 422, "invalid_event")
    assert "ahead of the receiver's clock (at most 5 s)" in says
    late = {"event_id": "e-late", "user_id": "u9", "item_id": "2", "ts": now - 86_400_000}
    assert client.post("/v1/events", json=late).status_code == 202
    # Same user, same partition: had the first been published, it would come first.
    [message] = consume(kafka, topic, 1)
    assert decode(ClickEvent, message.value()).event_id == "e-late"


def test_a_body_over_the_limit_is_413_before_it_is_parsed(client):
    body = b'{"user_id": "u", "item_id": "1", "pad": "' + b"x" * (70 * 1024) + b'"}'
    r = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert "at most 65536" in error(r, 413, "too_large")


def test_malformed_json_is_422(client):
    r = client.post(
        "/v1/events", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert "JSON decode error" in error(r, 422, "invalid_request")


def test_without_a_broker_an_event_is_accepted_into_the_spool(settings, store):
    settings.app.kafka_bootstrap = f"127.0.0.1:{free_port()}"
    settings.app.event_timeout_s = 0.5
    with TestClient(create_app(settings, store=store)) as client:
        r = client.post("/v1/events", json={"user_id": "u1", "item_id": "1"})
        # Accepted once on disk, when the broker did not acknowledge within the timeout.
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["spooled"] is True and body["partition"] is None and body["offset"] is None
        assert 'nrtrec_app_events_total{outcome="spooled"} 1.0' in client.get("/metrics").text
    spooled = settings.app.spool_path.read_text()
    assert body["event"]["event_id"] in spooled


def test_what_a_stopped_app_spooled_the_next_one_sends(settings, store, kafka, topic):
    """An app whose broker is away spools; the next app with a broker (here after the first
    stopped, as after a kill) sends all of it."""
    settings.app.kafka_bootstrap = f"127.0.0.1:{free_port()}"
    settings.app.event_timeout_s = 0.5
    with TestClient(create_app(settings, store=store)) as client:
        accepted = [
            client.post("/v1/events", json={"user_id": "u1", "item_id": str(i)}).json()
            for i in range(3)
        ]
    assert all(a["spooled"] for a in accepted)
    settings = with_kafka(settings, kafka)
    settings.app.kafka_bootstrap = None
    settings.topics.clicks = topic
    with TestClient(create_app(settings, store=store)):
        sent = [json.loads(m.value())["event_id"] for m in consume(kafka, topic, 3)]
        assert sorted(sent) == sorted(a["event"]["event_id"] for a in accepted)
        wait_until("the spool emptied", lambda: settings.app.spool_path.read_text() == "")


def test_generated_bad_input_is_refused_cleanly_and_publishes_nothing(client, kafka, topic):
    seen = refuse_generated_bad_input(client.app, client, {})
    assert sum(n for (_, path, _), n in seen.items() if path == "/v1/events") > 50, seen
    # The topic is this test's own: not one of those requests reached it, a good one does.
    assert records_in(kafka, topic) == 0
    assert client.post("/v1/events", json={"user_id": "u1", "item_id": "1"}).status_code == 202
    assert records_in(kafka, topic) == 1

import json

import pytest

from nrtrec.schemas import (
    ClickEvent,
    DeadLetter,
    Impression,
    InvalidRecord,
    ItemDelta,
    ListingEvent,
    Topic,
    UnknownTopic,
    UserVector,
    UserVectors,
    decode,
    encode,
    json_schema,
    model_for,
    payload_text,
)

CLICK = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "view", "ts": 1_700_000}
LISTING = {
    "event_id": "e2",
    "op": "upsert",
    "item_id": "i1",
    "ts": 1_700_000,
    "title": "Toy Story (1995)",
    "category": "Animation",
    "aspects": {"genres": ["Animation", "Comedy"]},
    "price": 9.99,
    "location": "US",
}


def test_click_round_trip():
    event = decode(ClickEvent, json.dumps(CLICK))
    assert event.key() == "u1"
    assert decode(ClickEvent, encode(event)) == event


def test_listing_round_trip_and_delete_without_text():
    assert decode(ListingEvent, encode(decode(ListingEvent, json.dumps(LISTING)))).title
    delete = decode(
        ListingEvent, json.dumps({"event_id": "e3", "op": "delete", "item_id": "i1", "ts": 5})
    )
    assert delete.title is None and delete.key() == "i1"


@pytest.mark.parametrize(
    ("model", "record", "field", "why"),
    [
        (ClickEvent, {**CLICK, "action": "poke"}, "action", "'view', 'click'"),
        (ClickEvent, {**CLICK, "ts": -1}, "ts", "greater than or equal to 0"),
        (ClickEvent, {**CLICK, "user_id": ""}, "user_id", "at least 1 character"),
        (ClickEvent, {**CLICK, "user_id": " u1"}, "user_id", "whitespace at either end"),
        # Ids that a path route could not address, or that break logs: refused at the door.
        (ClickEvent, {**CLICK, "item_id": "a/b"}, "item_id", 'no "/"'),
        (ClickEvent, {**CLICK, "item_id": "a\x00b"}, "item_id", "no control characters"),
        (ClickEvent, {**CLICK, "user_id": "u\x85"}, "user_id", "no control characters"),
        (ClickEvent, {**CLICK, "user_id": "u" * 257}, "user_id", "at most 256 characters"),
        (ClickEvent, {k: v for k, v in CLICK.items() if k != "item_id"}, "item_id", "required"),
        (ClickEvent, {**CLICK, "extra": 1}, "extra", "not permitted"),
        # A list's id is what the app made (uuid4 hex); anything else names no impression.
        (ClickEvent, {**CLICK, "request_id": "x" * 32}, "request_id", "32 lowercase hex"),
        (ClickEvent, {**CLICK, "request_id": "ab"}, "request_id", "at least 32 characters"),
        (ListingEvent, {**LISTING, "price": -3}, "price", "greater than or equal to 0"),
        (ListingEvent, {**LISTING, "op": "patch"}, "op", "'upsert' or 'delete'"),
        (ListingEvent, {**LISTING, "title": None}, "title", "required when op is 'upsert'"),
    ],
)
def test_invalid_record_names_the_field_and_why(model, record, field, why):
    with pytest.raises(InvalidRecord) as e:
        decode(model, json.dumps(record))
    assert f"{field}:" in str(e.value) or f"{field} is" in str(e.value)
    assert why in str(e.value)


def test_every_problem_is_reported_not_just_the_first():
    with pytest.raises(InvalidRecord) as e:
        decode(ClickEvent, json.dumps({**CLICK, "action": "poke", "ts": "soon"}))
    assert len(e.value.problems) == 2


def test_malformed_json_is_an_invalid_record():
    with pytest.raises(InvalidRecord, match="Invalid JSON"):
        decode(ClickEvent, b"{not json")


def test_item_delta_rejects_non_finite_vectors_and_upsert_without_vector():
    base = {"op": "upsert", "item_id": "i", "model_version": 1, "source_ts": 1}
    with pytest.raises(InvalidRecord, match=r"vector\.1: Input should be a finite number"):
        decode(ItemDelta, json.dumps({**base, "vector": [0.5, float("nan")]}))
    with pytest.raises(InvalidRecord, match="vector is required"):
        decode(ItemDelta, json.dumps(base))
    with pytest.raises(InvalidRecord, match="model_version"):
        decode(ItemDelta, json.dumps({**base, "vector": [1.0], "model_version": 0}))
    deleted = decode(ItemDelta, json.dumps({**base, "op": "delete"}))
    assert deleted.vector is None


def _uv(version: int, user: str = "u1") -> UserVector:
    return UserVector(
        user_id=user, model_version=version, vector=[float(version)], source_ts=1, updated_ts=2
    )


def test_user_vectors_keep_the_newest_versions_first():
    record = UserVectors(user_id="u1", versions=[_uv(1)])
    record = record.with_version(_uv(3), keep=2).with_version(_uv(2), keep=2)
    assert [v.model_version for v in record.versions] == [3, 2]
    assert record.newest().model_version == 3
    assert record.newest(2).vector == [2.0]
    assert record.newest(1) is None
    replaced = record.with_version(_uv(3).model_copy(update={"vector": [9.0]}), keep=2)
    assert replaced.newest(3).vector == [9.0] and len(replaced.versions) == 2


def test_user_vectors_reject_foreign_users_and_duplicate_versions():
    with pytest.raises(ValueError, match="belong to user_id"):
        UserVectors(user_id="u1", versions=[_uv(1, user="u2")])
    with pytest.raises(ValueError, match="at most once"):
        UserVectors(user_id="u1", versions=[_uv(1), _uv(1)])


def test_impression_round_trip_and_a_click_naming_its_list():
    record = {
        "request_id": "0123456789abcdef0123456789abcdef",
        "experiment": "ab-1",
        "user_id": "u1",
        "arm": "control",
        "source": "popular",
        "items": ["3", "1"],
        "ts": 5,
    }
    impression = decode(Impression, json.dumps(record))
    assert impression.key() == "u1" and impression.model_version is None
    assert decode(Impression, encode(impression)) == impression
    click = decode(ClickEvent, json.dumps({**CLICK, "request_id": impression.request_id}))
    assert decode(ClickEvent, encode(click)).request_id == impression.request_id
    # Without one, a click is encoded as before (no null field).
    assert b"request_id" not in encode(decode(ClickEvent, json.dumps(CLICK)))
    with pytest.raises(InvalidRecord, match="arm: a name is 1 to 64"):
        decode(Impression, json.dumps({**record, "arm": "a b"}))


def test_topics_map_to_models():
    assert model_for("clicks") is ClickEvent
    assert model_for(Topic.DEAD_LETTERS) is DeadLetter
    assert model_for("impressions") is Impression
    with pytest.raises(UnknownTopic):
        model_for("nope")


def test_payload_text_never_fails():
    assert payload_text(b"\xff\xfe") == repr(b"\xff\xfe")
    assert payload_text(None) == ""
    assert payload_text("é".encode()) == "é"


def test_json_schema_files_are_current():
    assert json_schema.stale() == [], "run `nrtrec schemas export` and commit the result"


def test_json_schema_files_describe_the_contract_fields():
    clicks = json.loads((json_schema.SCHEMA_DIR / "clicks.schema.json").read_text())
    assert set(clicks["required"]) == {"event_id", "user_id", "item_id", "action", "ts"}
    deltas = json.loads((json_schema.SCHEMA_DIR / "item-deltas.schema.json").read_text())
    assert {"op", "item_id", "model_version", "source_ts"} <= set(deltas["required"])
    assert "request_id" in clicks["properties"] and "request_id" not in clicks["required"]
    impressions = json.loads((json_schema.SCHEMA_DIR / "impressions.schema.json").read_text())
    assert set(impressions["required"]) == {"request_id", "user_id", "arm", "source", "items", "ts"}
    assert {"experiment", "model_version"} <= set(impressions["properties"])

"""The app's spool on its own, on a real file: what it keeps in memory and what a killed app
leaves for the next one."""

from __future__ import annotations

import gc
import uuid

from nrtrec.recommender_app.spool import EventSpool
from nrtrec.schemas import Impression, Source, encode


def impressions(n: int) -> list[Impression]:
    return [
        Impression(
            request_id=uuid.uuid4().hex,
            user_id=f"user-{i % 97}",
            arm="default",
            model_version=2,
            source=Source.PERSONALIZED,
            items=[f"item-{i + j}" for j in range(20)],
            ts=1_700_000_000_000 + i,
        )
        for i in range(n)
    ]


def spool_at(path) -> EventSpool[Impression]:
    return EventSpool(path, Impression, lambda r: r.request_id, Impression.key)


def test_a_spooled_record_is_kept_as_it_is_sent_and_read_back_the_same(tmp_path):
    path = tmp_path / "impressions.jsonl"
    records = impressions(5)
    spool = spool_at(path)
    spool.add_many(records[:4])
    spool.add(records[4])
    spool.done(records[1].request_id)
    sent = {r.id: r for r in spool.pending()}
    assert list(sent) == [r.request_id for i, r in enumerate(records) if i != 1]
    for record in records[:1] + records[2:]:
        assert sent[record.request_id].key == record.user_id
        assert Impression.model_validate_json(sent[record.request_id].value) == record
        assert sent[record.request_id].value == encode(record)

    # What a killed app left (its last line cut short by the kill) the next one reads back.
    with open(path, "ab") as f:
        f.write(b'{"event":{"request_id":"')
    assert spool_at(path).pending() == spool.pending()


def test_spooled_records_cost_the_garbage_collector_nothing(tmp_path):
    """While Kafka is down an app holds up to ``app.impressions_spool_max`` (20k) impressions:
    kept as models they were ~5 tracked objects each, scanned by every full collection."""
    spool = spool_at(tmp_path / "impressions.jsonl")
    records = impressions(5_000)
    gc.collect()
    before = len(gc.get_objects())
    spool.add_many(records)
    del records
    gc.collect()
    # The dict that holds them, and not one object more per record.
    assert len(gc.get_objects()) - before < 100
    assert len(spool) == 5_000

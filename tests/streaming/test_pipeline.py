"""End to end on the real services: listings and clicks produced to Kafka become searchable
items and stored user vectors through the two PyFlink jobs; a restart from the last checkpoint
at twice the parallelism loses nothing; bad events land in ``dead-letters``."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from nrtrec.cli.up import ensure_jobs
from nrtrec.core.datasets import load_movielens
from nrtrec.core.settings import Settings
from nrtrec.deploy.supervisor import log_tail
from nrtrec.inference.client import LocalEncoder
from nrtrec.schemas import ClickEvent, ListingOp, encode
from nrtrec.schemas.partitioning import PRODUCER_CONFIG
from nrtrec.streaming.history import History
from nrtrec.streaming.submit import ITEM_DELTAS, USER_VECTORS, wait_for_checkpoint
from nrtrec.user_store import open_store
from tests.pipeline import running_pipeline
from tests.waiting import collect, wait_until

pytestmark = pytest.mark.integration

N_ITEMS = 60
N_USERS = 12


@pytest.fixture(scope="module")
def pipeline(stack, test_settings: Settings, trained_models, tmp_path_factory):
    """The module's own pipeline on the session's services (``tests/pipeline.py``)."""
    with running_pipeline(stack, test_settings, tmp_path_factory.mktemp("pipeline")) as p:
        yield p.settings, p.flink, p.jobs, p.topics


def produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer({**PRODUCER_CONFIG, "bootstrap.servers": settings.kafka.bootstrap_servers})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def search_ids(settings: Settings, vector: np.ndarray, version: int, k: int = 100) -> set[str]:
    r = httpx.post(
        f"{settings.gateway.url}/v1/indexes/items/search",
        json={"vector": vector.tolist(), "k": k, "model_version": version},
        timeout=10,
    )
    if r.status_code == 404:
        return set()
    r.raise_for_status()
    return {hit["id"] for hit in r.json()["items"]}


def item(settings: Settings, item_id: str, version: int) -> dict | None:
    r = httpx.post(
        f"{settings.gateway.url}/v1/indexes/items/items",
        json={"ids": [item_id], "model_version": version},
        timeout=10,
    )
    r.raise_for_status()
    items = r.json()["items"]
    return items[0] if items else None


def job_metrics(flink, job_id: str) -> dict[str, list[str]]:
    """The metric ids of each vertex of a job (Flink REST)."""
    return {
        v["id"]: [m["id"] for m in flink.rest("GET", f"/jobs/{job_id}/vertices/{v['id']}/metrics")]
        for v in flink.rest("GET", f"/jobs/{job_id}")["vertices"]
    }


def job_counter(flink, job_id: str, name: str) -> float:
    """A user counter summed over the job's vertices and subtasks; 0 before Flink reports it."""
    total = 0.0
    for vertex, ids in job_metrics(flink, job_id).items():
        wanted = [m for m in ids if m.endswith("." + name)]
        if wanted:
            path = f"/jobs/{job_id}/vertices/{vertex}/metrics?get={','.join(wanted)}"
            total += sum(float(m["value"]) for m in flink.rest("GET", path))
    return total


def dead_letters(settings: Settings, topic: str, want: list[str], timeout_s: float) -> str:
    """The reasons of the dead letters on ``topic``, once every string of ``want`` is in them
    (dead letters are at least once: a restart may repeat some)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"dl-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])

    def reasons(messages: list) -> list[str]:
        return [json.loads(m.value())["error"] for m in messages]

    def enough(messages: list) -> bool:
        return all(any(w in reason for reason in reasons(messages)) for w in want)

    try:
        return " | ".join(reasons(collect(consumer, enough, timeout_s)))
    finally:
        consumer.close()


def diagnose(flink) -> str:
    logs = sorted(flink.log_dir.glob("*taskexecutor*.log"))
    return log_tail(logs[-1], 80) if logs else "(no taskmanager log)"


def expected_histories(events: list[ClickEvent]) -> dict[str, list[str]]:
    per_user: dict[str, History] = {}
    for c in events:
        per_user[c.user_id] = per_user.get(c.user_id, History()).with_click(c, 20)
    return {u: h.item_ids for u, h in per_user.items()}


def test_listings_and_clicks_become_items_and_user_vectors_and_survive_a_rescaling_restart(
    pipeline, trained_models
) -> None:
    settings, flink, jobs, topics = pipeline
    movies = list(load_movielens().movies.values())[:N_ITEMS]
    listings = [m.listing(1_000 + i) for i, m in enumerate(movies)]
    bad_listings = [
        ("x1", b"{not json"),
        ("x2", json.dumps({"event_id": "e", "op": "upsert", "item_id": "x2", "ts": 1}).encode()),
        # An id no path route could address: refused here, not indexed.
        ("x/3", json.dumps({**json.loads(encode(listings[0])), "item_id": "x/3"}).encode()),
    ]
    records = [(x.item_id, encode(x)) for x in listings] + bad_listings
    produce(settings, topics["listings"], records)

    local = LocalEncoder(settings.inference, trained_models.repository)
    expected = {v: local.encode_listings(listings, v).vectors for v in (1, 2)}
    probe = expected[2][0]
    wait_until(
        "all listings searchable in version 2",
        lambda: len(search_ids(settings, probe, 2)) == N_ITEMS,
        120,
        diagnose=lambda: diagnose(flink),
    )
    assert search_ids(settings, expected[1][0], 1) == {m.item_id for m in movies}
    served = item(settings, movies[3].item_id, 2)
    np.testing.assert_allclose(served["vector"], expected[2][3], atol=1e-5)
    assert served["attributes"]["title"] == movies[3].title

    # Clicks: each user views 6 distinct items, in time order.
    rng = np.random.default_rng(0)
    clicks = [
        ClickEvent(
            event_id=f"c-{u}-{j}",
            user_id=f"user-{u}",
            item_id=movies[int(i)].item_id,
            action="view",
            ts=10_000 + 100 * j,
        )
        for u in range(N_USERS)
        for j, i in enumerate(rng.choice(N_ITEMS, size=6, replace=False))
    ]
    # Every user's first three views before the restart, the last three after: each stored
    # history then needs the keyed state the restored job was given.
    first = [c for c in clicks if int(c.event_id.rsplit("-", 1)[1]) < 3]
    second = [c for c in clicks if int(c.event_id.rsplit("-", 1)[1]) >= 3]
    produce(settings, topics["clicks"], [(c.user_id, encode(c)) for c in first])
    # Dated an hour ahead of the job's clock: it would stay the user's newest view for an hour.
    future = clicks[0].model_copy(
        update={"user_id": "u-future", "ts": time.time_ns() // 1_000_000 + 3_600_000}
    )
    produce(
        settings,
        topics["clicks"],
        [("u-bad", b'{"user_id": "u-bad"}'), (future.user_id, encode(future))],
    )

    store = open_store(settings)

    def stored_match(events: list[ClickEvent]) -> bool:
        for user_id, items in expected_histories(events).items():
            record = store.get(user_id)
            if record is None or record.recent_items != items:
                return False
        return True

    wait_until(
        "first clicks stored", lambda: stored_match(first), 120, diagnose=lambda: diagnose(flink)
    )

    # Restart and rescale: cancel both jobs after a checkpoint (it is retained), produce while
    # they are down, then start them again from their newest checkpoint at parallelism 2, over
    # the session's two TaskManagers: Flink splits each job's keyed state (histories, item
    # vectors) by key group between the two subtasks.
    for name in (USER_VECTORS.name, ITEM_DELTAS.name):
        wait_for_checkpoint(flink, jobs[name], timeout_s=60)
        flink.cancel_job(jobs[name])
    wait_until(
        "jobs cancelled", lambda: all(flink.job_state(j) == "CANCELED" for j in jobs.values()), 60
    )
    produce(settings, topics["clicks"], [(c.user_id, encode(c)) for c in second])
    renamed = movies[0].listing(50_000).model_copy(update={"title": "Toy Story, restored"})
    deleted = movies[1].listing(50_001, ListingOp.DELETE)
    # Text unchanged: published from the vectors in the job's keyed state, restored with it.
    repriced = movies[2].listing(50_002).model_copy(update={"price": 1234.5})
    produce(
        settings,
        topics["listings"],
        [(x.item_id, encode(x)) for x in (renamed, deleted, repriced)],
    )
    rescaled = settings.model_copy(
        update={"streaming": settings.streaming.model_copy(update={"parallelism": 2})}
    )
    restarted = ensure_jobs(rescaled, flink)
    assert set(restarted.values()).isdisjoint(jobs.values())
    for name, job_id in restarted.items():
        vertices = flink.rest("GET", f"/jobs/{job_id}")["vertices"]
        assert {v["parallelism"] for v in vertices} == {2}, f"{name}: {vertices}"
    wait_until(
        "every click stored", lambda: stored_match(clicks), 120, diagnose=lambda: diagnose(flink)
    )

    # A stored vector is the user tower over its items' vectors, in the newest version, and
    # the replay after the restart counted no click twice.
    record = store.get("user-0")
    assert record.versions[0].model_version == 2
    assert len(record.recent_items) == len(set(record.recent_items)) == 6
    row = {m.item_id: i for i, m in enumerate(movies)}
    history = np.stack([expected[2][row[i]] for i in record.recent_items])
    np.testing.assert_allclose(
        record.versions[0].vector, local.encode_users([history], 2).vectors[0], atol=1e-4
    )
    wait_until("delete applied", lambda: item(settings, deleted.item_id, 2) is None, 60)
    wait_until(
        "update applied",
        lambda: (
            (item(settings, renamed.item_id, 2) or {}).get("attributes", {}).get("title")
            == "Toy Story, restored"
        ),
        60,
    )
    assert len(search_ids(settings, probe, 2)) == N_ITEMS - 1
    np.testing.assert_allclose(
        item(settings, renamed.item_id, 2)["vector"],
        local.encode_listings([renamed], 2).vectors[0],
        atol=1e-5,
    )
    wait_until(
        "price update applied",
        lambda: (
            (item(settings, repriced.item_id, 2) or {}).get("attributes", {}).get("price") == 1234.5
        ),
        60,
    )
    for version in (1, 2):
        served = item(settings, repriced.item_id, version)
        np.testing.assert_allclose(served["vector"], expected[version][2], atol=1e-5)
    # ... and published without the tower: the restarted job re-used both versions' vectors.
    wait_until(
        "the item job's metrics count the re-used vectors",
        lambda: job_counter(flink, restarted[ITEM_DELTAS.name], "item_vectors_reused") >= 2,
        60,
        diagnose=lambda: str(job_metrics(flink, restarted[ITEM_DELTAS.name])),
    )
    assert job_counter(flink, restarted[ITEM_DELTAS.name], "item_vectors_encoded") >= 2

    # Bad events: each a dead letter with its reason, and the jobs kept running.
    want = [
        "Invalid JSON",
        "title is required",
        "invalid ClickEvent",
        'item_id: an id has no "/"',
        "ahead of the receiver's clock",
    ]
    reasons = dead_letters(settings, topics["dead"], want, timeout_s=60)
    for reason in want:
        assert reason in reasons
    assert store.get("u-future") is None
    assert all(flink.job_state(j) == "RUNNING" for j in restarted.values())
    store.close()

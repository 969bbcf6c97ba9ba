"""The demo's event producer: MovieLens-100k replayed as listings, then time-ordered clicks."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from nrtrec.datasets import load_movielens
from nrtrec.schemas import Topic, encode
from nrtrec.schemas.partitioning import PRODUCER_CONFIG
from nrtrec.settings import Settings
from nrtrec.streaming.jobs.common import topic_name

Progress = Callable[[int, int], None]  # (done, total)


def _producer(settings: Settings) -> Producer:
    return Producer(
        {**PRODUCER_CONFIG, "bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 5}
    )


def replay_listings(settings: Settings, progress: Progress = lambda d, t: None) -> int:
    """Every title as an upsert on ``listings`` (keyed by item id); returns how many."""
    listings = load_movielens().listings(ts_ms=int(time.time() * 1000))
    producer = _producer(settings)
    topic = topic_name(settings, Topic.LISTINGS)
    for i, listing in enumerate(listings, 1):
        producer.produce(topic, key=listing.item_id.encode(), value=encode(listing))
        producer.poll(0)
        progress(i, len(listings))
    producer.flush(60)
    return len(listings)


def replay_clicks(
    settings: Settings,
    rate: float,
    limit: int | None = None,
    progress: Progress = lambda d, t: None,
) -> int:
    """MovieLens ratings in time order as ``view`` clicks at ``rate`` per second, stamped now
    (the original times are decades old and would read as stale)."""
    clicks = load_movielens().clicks()[:limit]
    producer = _producer(settings)
    topic = topic_name(settings, Topic.CLICKS)
    start = time.monotonic()
    for i, click in enumerate(clicks, 1):
        due = start + (i - 1) / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        stamped = click.model_copy(update={"ts": int(time.time() * 1000)})
        producer.produce(topic, key=stamped.user_id.encode(), value=encode(stamped))
        producer.poll(0)
        progress(i, len(clicks))
    producer.flush(60)
    return len(clicks)

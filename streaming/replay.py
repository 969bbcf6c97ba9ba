"""The demo's event producer: MovieLens-100k replayed as listings, then time-ordered clicks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from nrtrec.core.datasets import load_movielens
from nrtrec.core.kafka import producer_config
from nrtrec.core.settings import Settings
from nrtrec.schemas import encode

Progress = Callable[[int, int], None]  # (done, total)


def _producer(settings: Settings) -> Producer:
    return Producer(producer_config(settings.kafka.bootstrap_servers, "nrtrec-replay"))


def replay_listings(settings: Settings, progress: Progress = lambda d, t: None) -> int:
    """Every title as an upsert on ``listings`` (keyed by item id); returns how many."""
    listings = load_movielens().listings(ts_ms=int(time.time() * 1000))
    producer = _producer(settings)
    topic = settings.topics.listings
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
    position: Path | None = None,
) -> int:
    """MovieLens ratings in time order as ``view`` clicks at ``rate`` per second, stamped now
    (the original times are decades old and would read as stale); returns how many were sent.

    With ``position`` (a file) a replay that was killed goes on where it stopped: every
    ``POSITION_EVERY`` clicks, once Kafka acknowledged them, the count sent is written there.
    What came after the last write is sent again (at least once; a click keeps its event_id).
    """
    clicks = load_movielens().clicks()[:limit]
    done = _read_position(position)
    producer = _producer(settings)
    topic = settings.topics.clicks
    start = time.monotonic()
    for i, click in enumerate(clicks[done:], done + 1):
        due = start + (i - 1 - done) / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        stamped = click.model_copy(update={"ts": int(time.time() * 1000)})
        producer.produce(topic, key=stamped.user_id.encode(), value=encode(stamped))
        producer.poll(0)
        progress(i, len(clicks))
        if position is not None and i % POSITION_EVERY == 0:
            producer.flush(60)
            _write_position(position, i)
    producer.flush(60)
    if position is not None:
        _write_position(position, len(clicks))
    return len(clicks) - done


POSITION_EVERY = 500


def _read_position(path: Path | None) -> int:
    try:
        return int(path.read_text()) if path is not None else 0
    except (OSError, ValueError):
        return 0


def _write_position(path: Path, sent: int) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(str(sent))
    os.replace(temp, path)

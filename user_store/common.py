"""What every backend shares: key names, the merge rule of a put, and the retry of a lost race.

The merge rule lives here, once, so that Redis and Couchbase cannot disagree on what a write
does; a backend only supplies the atomic read-merge-write around it (WATCH/MULTI, CAS).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from nrtrec.core.settings import UserStoreSettings
from nrtrec.schemas import UserVector, UserVectors


def user_key(prefix: str, user_id: str) -> str:
    """The key of one user's record."""
    return f"{prefix}user:{user_id}"


def popular_key(prefix: str) -> str:
    """The base of the popularity keys (until views were counted per day, the one key of
    all-time counts; a store that still holds it no longer reads it)."""
    return f"{prefix}popular"


def popular_day_key(prefix: str, day: int) -> str:
    """The key of one UTC day's item view counts."""
    return f"{popular_key(prefix)}:{day}"


def popular_days_key(prefix: str) -> str:
    """The key of the days that have views, which ``popular`` reads its newest day from."""
    return f"{popular_key(prefix)}:days"


DAY_MS = 86_400_000


def day_of(ts_ms: int) -> int:
    """The UTC day number of a timestamp in milliseconds: ``add_views``'s ``day``."""
    return ts_ms // DAY_MS


def today() -> int:
    """The UTC day number of the wall clock (``add_views`` without a ``day``)."""
    return day_of(int(time.time() * 1000))


def popular_window(newest: int, window_days: int) -> range:
    """The days whose views ``popular`` sums: the ``window_days`` ending at ``newest``."""
    return range(newest - window_days + 1, newest + 1)


def merge(
    stored: UserVectors | None,
    vector: UserVector,
    recent_items: Sequence[str] | None,
    cfg: UserStoreSettings,
    *,
    create: bool = True,
) -> UserVectors | None:
    """The user's record once ``vector`` is written, or None when the write changes nothing
    (an unknown user with ``create=False`` included).

    A write changes nothing (and its ``recent_items`` are ignored too) when it is stale:

    - the stored entry of the same ``model_version`` has a newer ``source_ts`` (a replay from an
      older checkpoint must not take the user back in time);
    - its ``model_version`` is older than every kept version while ``keep_versions`` are already
      kept, so trimming would drop it at once (a late write from a retired encoder).

    An equal ``source_ts`` is not stale: the write is applied again, so replaying the same write
    gives the same record, returns True both times, and refreshes the expiry.
    """
    recent = None if recent_items is None else list(recent_items)[: cfg.recent_items]
    if stored is None:
        if not create:
            return None
        return UserVectors(user_id=vector.user_id, versions=[vector], recent_items=recent or [])
    current = stored.newest(vector.model_version)
    if current is not None and current.source_ts > vector.source_ts:
        return None
    merged = stored.with_version(vector, cfg.keep_versions, recent)
    if merged.newest(vector.model_version) is None:
        return None
    return merged


# A read-merge-write's merge: the stored record (None: no such user) -> the record to write, or
# None to write nothing.
Change = Callable[[UserVectors | None], UserVectors | None]


def without_version(stored: UserVectors | None, model_version: int) -> UserVectors | None:
    """The record once its ``model_version`` vector is removed, or None when that changes
    nothing or is not allowed: an unknown user, no such vector, or no newer version to take
    its place (a retire never leaves a user without a vector)."""
    if stored is None or stored.newest(model_version) is None:
        return None
    if not any(v.model_version > model_version for v in stored.versions):
        return None
    kept = [v for v in stored.versions if v.model_version != model_version]
    return stored.model_copy(update={"versions": kept})


def user_shard(user_id: str, shards: int) -> int:
    """Which of ``shards`` registry documents lists ``user_id`` (Couchbase's ``user_ids``)."""
    return hashlib.blake2b(user_id.encode(), digest_size=2).digest()[0] % shards


def in_batches(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """``ids`` in lists of at most ``size`` (``user_ids``; itertools.batched is 3.12)."""
    batch: list[str] = []
    for item in ids:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def conflict_retrying(conflicts: tuple[type[BaseException], ...], retries: int) -> Retrying:
    """Retry a read-merge-write that lost a race to another writer, ``retries`` times at most.

    The short random wait spreads writers that collided, so they do not collide again in step.
    When every try lost, the last conflict is raised (``reraise``) for the backend to map.
    """
    return Retrying(
        retry=retry_if_exception_type(conflicts),
        stop=stop_after_attempt(retries + 1),
        wait=wait_random_exponential(multiplier=0.001, max=0.05),
        reraise=True,
    )

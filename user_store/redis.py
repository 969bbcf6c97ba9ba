"""The Redis backend: one JSON string per user, one sorted set of item views per day.

Layout (``p`` is ``settings.user_store.key_prefix``; ``w`` is ``popular_window_days``):

- ``{p}user:{user_id}``: the ``UserVectors`` JSON, with expiry ``ttl_s`` set on every write;
- ``{p}popular:{day}``: a sorted set per UTC day, member item id, score its views that day;
  every write sets its expiry to ``w + 2`` days, so a day no window reads goes away by itself;
- ``{p}popular:days``: a sorted set of the days that have views (member and score the day),
  the last ``w`` only, for ``popular`` to find the newest one; same expiry, set on every write.
  ``popular`` sums the window's days with ZUNIONSTORE into a scratch key, ranks and deletes it.
  (``{p}popular``, the all-time counts of before, is no longer read or written.)

``user_ids`` is a ``SCAN`` over ``{p}user:*``: no list of users to keep in step.

A put is an optimistic transaction (WATCH the key, read, merge in Python, MULTI/SET/EXEC) rather
than a Lua script: the merge rule stays the one Python function both backends share, and Lua's
cjson would round the vectors' floats to 14 digits. A put that loses the race retries.

Redis connects lazily: constructing the store does no I/O, and every call that cannot reach
Redis raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from nrtrec.core.settings import Settings
from nrtrec.schemas import UserVector, UserVectors
from nrtrec.user_store.base import UserVectorStore
from nrtrec.user_store.common import (
    Change,
    conflict_retrying,
    in_batches,
    merge,
    popular_day_key,
    popular_days_key,
    popular_key,
    popular_window,
    today,
    user_key,
    without_version,
)
from nrtrec.user_store.errors import StoreError, StoreUnavailable


class RedisUserVectorStore(UserVectorStore):
    """User vectors in Redis (``settings.redis``), bounded by ``settings.user_store`` timeouts."""

    def __init__(self, settings: Settings):
        self._cfg = settings.user_store
        self._url = settings.redis.url
        self._pool = redis.ConnectionPool.from_url(
            self._url,
            socket_timeout=self._cfg.timeout_s,
            socket_connect_timeout=self._cfg.connect_timeout_s,
            # A pooled socket that died with a Redis restart is retried once on a new
            # connection; a timeout is not retried, so a slow Redis costs one timeout_s.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self._days = popular_days_key(self._cfg.key_prefix)
        # The one scratch key of popular(): its ZUNIONSTORE, ZREVRANGE and DEL run in one
        # MULTI/EXEC, which no other client's command interleaves, so concurrent readers never
        # see each other's union; and a fixed name cannot leave stray keys behind.
        self._scratch = f"{popular_key(self._cfg.key_prefix)}:scratch"
        self._keep_s = (self._cfg.popular_window_days + 2) * 86_400

    def put(
        self,
        vector: UserVector,
        *,
        recent_items: Sequence[str] | None = None,
        create: bool = True,
    ) -> bool:
        return self._rewrite(
            vector.user_id,
            f"put user {vector.user_id!r}",
            lambda stored: merge(stored, vector, recent_items, self._cfg, create=create),
        )

    def get(self, user_id: str) -> UserVectors | None:
        with self._errors(f"get user {user_id!r}"):
            raw = self._client.get(user_key(self._cfg.key_prefix, user_id))
        return self._decode(raw, user_id)

    def drop_version(self, user_id: str, model_version: int) -> bool:
        return self._rewrite(
            user_id,
            f"drop v{model_version} of user {user_id!r}",
            lambda stored: without_version(stored, model_version),
        )

    def user_ids(self, batch: int = 500) -> Iterator[list[str]]:
        prefix = user_key(self._cfg.key_prefix, "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        with self._errors("list users"):
            keys = self._client.scan_iter(match=pattern, count=batch)
            yield from in_batches((key.decode()[len(prefix) :] for key in keys), batch)

    def delete(self, user_id: str) -> None:
        with self._errors(f"delete user {user_id!r}"):
            self._client.delete(user_key(self._cfg.key_prefix, user_id))

    def add_views(self, counts: Mapping[str, int], *, day: int | None = None) -> None:
        increments = {item: n for item, n in counts.items() if n}
        if not increments:
            return
        day = today() if day is None else day
        key = popular_day_key(self._cfg.key_prefix, day)
        oldest = popular_window(day, self._cfg.popular_window_days).start
        with self._errors("add views"), self._client.pipeline(transaction=True) as pipe:
            # One MULTI/EXEC: every count of the batch lands, or none does.
            for item, n in increments.items():
                pipe.zincrby(key, n, item)
            pipe.expire(key, self._keep_s)
            pipe.zadd(self._days, {str(day): day})
            # Days before ``day``'s window are before the newest day's window too.
            pipe.zremrangebyscore(self._days, "-inf", f"({oldest}")
            pipe.expire(self._days, self._keep_s)
            pipe.execute()

    def popular(self, k: int) -> list[tuple[str, float]]:
        if k <= 0:  # ZREVRANGE 0 -1 would mean "everything"
            return []
        window = self._cfg.popular_window_days
        with self._errors("read popular items"):
            newest_first = self._client.zrevrange(self._days, 0, window - 1, withscores=True)
            if not newest_first:
                return []
            days = popular_window(int(newest_first[0][1]), window)
            keys = [
                popular_day_key(self._cfg.key_prefix, int(d))
                for _, d in newest_first
                if int(d) in days
            ]
            with self._client.pipeline(transaction=True) as pipe:
                pipe.zunionstore(self._scratch, keys)  # a missing (expired) day counts as empty
                pipe.zrevrange(self._scratch, 0, k - 1, withscores=True)
                pipe.delete(self._scratch)
                _, ranked, _ = pipe.execute()
        return [(item.decode(), float(score)) for item, score in ranked]

    def ping(self) -> None:
        with self._errors("ping"):
            self._client.ping()

    def close(self) -> None:
        self._client.close()
        # The client does not own a pool it was given; its sockets are closed here.
        self._pool.disconnect()

    def _rewrite(self, user_id: str, what: str, change: Change) -> bool:
        """Read the user's record, ``change`` it and write it back atomically; False when
        ``change`` wrote nothing."""
        key = user_key(self._cfg.key_prefix, user_id)
        with self._errors(what):
            for attempt in conflict_retrying((WatchError,), self._cfg.write_retries):
                with attempt, self._client.pipeline() as pipe:
                    # WATCH makes EXEC fail if anyone writes the key after this read.
                    pipe.watch(key)
                    changed = change(self._decode(pipe.get(key), user_id))
                    if changed is None:
                        return False
                    pipe.multi()
                    pipe.set(key, changed.model_dump_json(), ex=self._cfg.ttl_s)
                    pipe.execute()
        return True

    def _decode(self, raw: bytes | None, user_id: str) -> UserVectors | None:
        if raw is None:
            return None
        try:
            return UserVectors.model_validate_json(raw)
        except ValidationError as exc:
            raise StoreError(
                f"redis at {self._url} holds an invalid record for user {user_id!r}: {exc}"
            ) from exc

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Re-raise redis-py's exceptions as the store's own, naming the call and the server."""
        try:
            yield
        except WatchError as exc:
            raise StoreError(
                f"redis {what}: gave up after {self._cfg.write_retries + 1} tries, each lost"
                " to another writer of the same key (raise user_store.write_retries?)"
            ) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"redis {what}: {self._url} did not answer: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"redis {what} failed at {self._url}: {exc}") from exc

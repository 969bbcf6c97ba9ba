"""The Couchbase backend (the design card's store), on the bucket's default collection.

Layout (``p`` is ``settings.user_store.key_prefix``):

- ``{p}user:{user_id}``: the ``UserVectors`` document, with expiry ``ttl_s`` set on every write.
  Couchbase keys stop at 250 bytes, so a longer one becomes ``{p}user#sha256:{hex of user_id}``
  (the document still names its ``user_id``);
- ``{p}popular:{day}``: one document per UTC day, ``{item_id: views}``, bumped with
  sub-document increments, which the server applies atomically: no read, no CAS race between
  writers. ``popular`` sums the window's days and ranks them in Python; a counter document per
  item would need a N1QL index to rank. One document holds a few hundred thousand items before
  Couchbase's 20 MB document limit.
- ``{p}popular:days``: the days that have views, ``{day: 1}`` (sub-document upserts, no
  expiry), for ``popular`` to find the newest day and its window's. A day is registered before
  its first views land (as users are); registering a day newer than every known one prunes the
  days before its window, documents first, then fields (best effort: a failure there leaves
  them for the next prune and does not fail the add). ``{p}popular``, the all-time counts of
  before, is no longer read or written.
- ``{p}users:{0..63}``: which users there are, ``{user_id: 1}`` in the document
  ``user_shard(user_id, 64)`` names (no expiry), for ``user_ids``: CouchbaseMock has no N1QL
  and no range scan to list keys with. The field name is escaped as ``popular``'s are; an id
  whose path would pass 1024 bytes is stored as ``#sha256:{hex}: user_id`` instead. A put that
  creates a user adds it (a sub-document upsert, before the insert); a delete removes it; a
  record that expired leaves its id, which ``user_ids`` may still yield. 64 documents keep
  each one far under the 20 MB limit at a million users.

A put reads the document with its CAS, merges in Python and writes with ``replace(cas=...)`` (or
``insert`` for a new user); a write that loses the race to another writer retries.

Only the default collection is used and expiry is never read back: CouchbaseMock, the local
stand-in, has no collections and ``get(with_expiry=True)`` aborts the Python process there.

The SDK connects eagerly: constructing the store bootstraps (``connect_timeout_s``) and raises
:class:`StoreUnavailable` when the cluster does not answer; after that the SDK reconnects by
itself and each call is bounded by ``timeout_s``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any

import httpx
from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.diagnostics import PingState, ServiceType
from couchbase.exceptions import (
    AmbiguousTimeoutException,
    CasMismatchException,
    CouchbaseException,
    DocumentExistsException,
    DocumentNotFoundException,
    PathNotFoundException,
    RequestCanceledException,
    ServiceUnavailableException,
    TemporaryFailException,
    TimeoutException,
    UnAmbiguousTimeoutException,
)
from couchbase.options import (
    ClusterOptions,
    ClusterTimeoutOptions,
    InsertOptions,
    MutateInOptions,
    PingOptions,
    ReplaceOptions,
)
from couchbase.subdocument import StoreSemantics, decrement, increment, remove, upsert
from pydantic import ValidationError

from nrtrec.core.settings import CouchbaseSettings, Settings
from nrtrec.schemas import UserVector, UserVectors
from nrtrec.user_store.base import UserVectorStore
from nrtrec.user_store.common import (
    Change,
    conflict_retrying,
    in_batches,
    merge,
    popular_day_key,
    popular_days_key,
    popular_window,
    today,
    user_key,
    user_shard,
    without_version,
)
from nrtrec.user_store.errors import StoreError, StoreUnavailable

# Couchbase's limits: a key is at most 250 bytes; one mutate_in carries at most 16 specs.
MAX_KEY_BYTES = 250
MAX_SUBDOC_SPECS = 16
# A sub-document path is at most 1024 bytes.
MAX_PATH_BYTES = 1024
# Documents listing the users (``user_ids``).
REGISTRY_SHARDS = 64

log = logging.getLogger("nrtrec.user_store.couchbase")

# The SDK's ways of saying "no answer in time" or "no node to send it to".
_UNAVAILABLE = (
    TimeoutException,
    AmbiguousTimeoutException,
    UnAmbiguousTimeoutException,
    ServiceUnavailableException,
    RequestCanceledException,
    TemporaryFailException,
)
# A put's read-merge-write lost to another writer: the CAS moved, the user appeared before our
# insert, or vanished (delete) before our replace.
_CONFLICTS = (CasMismatchException, DocumentExistsException, DocumentNotFoundException)


class CouchbaseUserVectorStore(UserVectorStore):
    """User vectors in a Couchbase bucket (``settings.couchbase``)."""

    def __init__(self, settings: Settings):
        self._cfg = settings.user_store
        cb = settings.couchbase
        self._connstr = cb.connstr or _discovered_connstr(cb)
        self._timeout = timedelta(seconds=self._cfg.timeout_s)
        connect = timedelta(seconds=self._cfg.connect_timeout_s)
        # Expiry goes on every write; an option left out (ttl_s None) means "never expire".
        self._expiry: dict[str, Any] = (
            {} if self._cfg.ttl_s is None else {"expiry": timedelta(seconds=self._cfg.ttl_s)}
        )
        options = ClusterOptions(
            PasswordAuthenticator(cb.username, cb.password),
            timeout_options=ClusterTimeoutOptions(
                connect_timeout=connect,
                bootstrap_timeout=connect,
                kv_timeout=self._timeout,
            ),
        )
        self._cluster: Cluster | None = None
        with self._errors("connect"):
            self._cluster = Cluster(self._connstr, options)
            try:
                self._bucket = self._cluster.bucket(cb.bucket)
                self._collection = self._bucket.default_collection()
            except BaseException:
                self._cluster.close()
                raise
        self._days = popular_days_key(self._cfg.key_prefix)
        # Days this store registered: their later views need no registering.
        self._registered_days: set[int] = set()

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
            stored, _ = self._read(self._user_key(user_id), user_id)
        return stored

    def delete(self, user_id: str) -> None:
        with self._errors(f"delete user {user_id!r}"):
            with suppress(DocumentNotFoundException):
                self._collection.remove(self._user_key(user_id))
            with suppress(DocumentNotFoundException, PathNotFoundException):
                path, _ = _registry_entry(user_id)
                self._collection.mutate_in(self._registry_key(user_id), [remove(path)])

    def drop_version(self, user_id: str, model_version: int) -> bool:
        return self._rewrite(
            user_id,
            f"drop v{model_version} of user {user_id!r}",
            lambda stored: without_version(stored, model_version),
        )

    def user_ids(self, batch: int = 500) -> Iterator[list[str]]:
        yield from in_batches(self._registered(), batch)

    def _registered(self) -> Iterator[str]:
        for shard in range(REGISTRY_SHARDS):
            with self._errors("list users"):
                try:
                    names = self._collection.get(self._registry(shard)).content_as[dict]
                except DocumentNotFoundException:
                    continue
            for name, value in names.items():
                yield value if isinstance(value, str) else _field_name(name)

    def _rewrite(self, user_id: str, what: str, change: Change) -> bool:
        """Read the user's document with its CAS, ``change`` it and write it back (insert for a
        new user); False when ``change`` wrote nothing."""
        key = self._user_key(user_id)
        with self._errors(what):
            for attempt in conflict_retrying(_CONFLICTS, self._cfg.write_retries):
                with attempt:
                    stored, cas = self._read(key, user_id)
                    changed = change(stored)
                    if changed is None:
                        return False
                    doc = changed.model_dump(mode="json")
                    if cas is None:
                        # Registered first: a failure in between leaves an id without a
                        # record (user_ids may yield those), never a record user_ids misses,
                        # which the retried put (a replace by then) would not register.
                        self._register(user_id)
                        self._collection.insert(key, doc, InsertOptions(**self._expiry))
                    else:
                        options = ReplaceOptions(cas=cas, **self._expiry)
                        self._collection.replace(key, doc, options)
        return True

    def _registry(self, shard: int) -> str:
        return f"{self._cfg.key_prefix}users:{shard}"

    def _registry_key(self, user_id: str) -> str:
        return self._registry(user_shard(user_id, REGISTRY_SHARDS))

    def _register(self, user_id: str) -> None:
        self._mutate_creating(self._registry_key(user_id), [upsert(*_registry_entry(user_id))])

    def _mutate_creating(self, key: str, specs: list) -> None:
        """``mutate_in`` that creates the document if it is missing (UPSERT semantics): two
        first writers may both try to create it, and the loser retries."""
        options = MutateInOptions(store_semantics=StoreSemantics.UPSERT)
        for attempt in conflict_retrying(_CONFLICTS, self._cfg.write_retries):
            with attempt:
                self._collection.mutate_in(key, specs, options)

    def add_views(self, counts: Mapping[str, int], *, day: int | None = None) -> None:
        specs = [
            (increment if n > 0 else decrement)(_field_path(item), abs(n))
            for item, n in counts.items()
            if n  # the server rejects a zero delta
        ]
        if not specs:
            return
        day = today() if day is None else day
        with self._errors("add views"):
            newer = self._register_day(day)
        # The day's document is created on its first views. Each chunk is atomic; a batch of
        # more than 16 items is several, so a failure midway may land part of it.
        key = popular_day_key(self._cfg.key_prefix, day)
        with self._errors("add views"):
            for start in range(0, len(specs), MAX_SUBDOC_SPECS):
                self._mutate_creating(key, specs[start : start + MAX_SUBDOC_SPECS])
        if newer:
            self._prune(newer, day)

    def _known_days(self) -> list[int]:
        try:
            return [int(d) for d in self._collection.get(self._days).content_as[dict]]
        except DocumentNotFoundException:
            return []

    def _register_day(self, day: int) -> list[int]:
        """List ``day`` in the days document; the days known before when it is newer than all
        of them (for :meth:`_prune`), else []."""
        if day in self._registered_days:
            return []
        known = self._known_days()
        if day not in known:
            self._mutate_creating(self._days, [upsert(f"`{day}`", 1)])
        self._registered_days = {
            d for d in self._registered_days if d > day - self._cfg.popular_window_days
        } | {day}
        return known if known and day > max(known) else []

    def _prune(self, known: list[int], newest: int) -> None:
        """Forget the days before ``newest``'s window: their documents, then their fields (a
        field whose document is still there is deleted by the next prune)."""
        old = [d for d in known if d < popular_window(newest, self._cfg.popular_window_days).start]
        try:
            for d in old:
                with suppress(DocumentNotFoundException):
                    self._collection.remove(popular_day_key(self._cfg.key_prefix, d))
            for start in range(0, len(old), MAX_SUBDOC_SPECS):
                chunk = old[start : start + MAX_SUBDOC_SPECS]
                # A chunk fails whole when another writer pruned one of its days first.
                with suppress(PathNotFoundException):
                    self._collection.mutate_in(self._days, [remove(f"`{d}`") for d in chunk])
        except CouchbaseException as exc:
            log.warning("couchbase: pruning popularity days %s failed: %s", old, exc)

    def popular(self, k: int) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        with self._errors("read popular items"):
            known = self._known_days()
            if not known:
                return []
            window = popular_window(max(known), self._cfg.popular_window_days)
            keys = [popular_day_key(self._cfg.key_prefix, d) for d in known if d in window]
            # One round trip for the window's documents; a missing one has no views.
            result = self._collection.get_multi(keys)
            for error in result.exceptions.values():
                if not isinstance(error, DocumentNotFoundException):
                    raise error
            counts: Counter[str] = Counter()
            for got in result.results.values():
                counts.update(got.content_as[dict])
        # Most views first; ties in reverse id order, as Redis's ZREVRANGE breaks them.
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], _field_name(kv[0])), reverse=True)
        return [(_field_name(name), float(n)) for name, n in ranked[:k]]

    def ping(self) -> None:
        with self._errors("ping"):
            report = self._bucket.ping(
                PingOptions(service_types=[ServiceType.KeyValue], timeout=self._timeout)
            )
        endpoints = report.endpoints.get(ServiceType.KeyValue, [])
        failed = [
            f"{e.remote}: {e.error or e.state.value}" for e in endpoints if e.state != PingState.OK
        ]
        if not endpoints or failed:
            raise StoreUnavailable(
                f"couchbase ping: key-value service at {self._connstr} not answering: "
                + ("; ".join(failed) or "no endpoint")
            )

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _user_key(self, user_id: str) -> str:
        key = user_key(self._cfg.key_prefix, user_id)
        if len(key.encode()) <= MAX_KEY_BYTES:
            return key
        digest = hashlib.sha256(user_id.encode()).hexdigest()
        return f"{self._cfg.key_prefix}user#sha256:{digest}"

    def _read(self, key: str, user_id: str) -> tuple[UserVectors | None, int | None]:
        """The stored record and its CAS, or (None, None) for an unknown user."""
        try:
            result = self._collection.get(key)
        except DocumentNotFoundException:
            return None, None
        try:
            return UserVectors.model_validate(result.content_as[dict]), result.cas
        except (ValidationError, ValueError) as exc:
            raise StoreError(
                f"couchbase at {self._connstr} holds an invalid record for user {user_id!r}"
                f" (key {key!r}): {exc}"
            ) from exc

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Re-raise the SDK's exceptions as the store's own, naming the call and the cluster."""
        try:
            yield
        except _CONFLICTS as exc:
            raise StoreError(
                f"couchbase {what}: gave up after {self._cfg.write_retries + 1} tries, each"
                " lost to another writer of the same document (raise user_store.write_retries?)"
            ) from exc
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"couchbase {what}: {self._connstr} did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        except CouchbaseException as exc:
            raise StoreError(
                f"couchbase {what} failed at {self._connstr}: {type(exc).__name__}: {exc}"
            ) from exc


def _field_path(item_id: str) -> str:
    """The sub-document path of ``item_id``'s count in the popularity document.

    A backtick-quoted path takes any character but the backtick itself, which Couchbase escapes
    by doubling and CouchbaseMock mangles (``a`b`` became ``ab``). So the stored field name
    percent-encodes ``%`` and the backtick, and no path ever needs escaping.
    """
    return "`" + item_id.replace("%", "%25").replace("`", "%60") + "`"


def _registry_entry(user_id: str) -> tuple[str, object]:
    """The path and value of ``user_id`` in its registry document: ``{id: 1}``.

    An id of 256 four-byte characters makes a path past the 1024-byte limit; its field is then
    its hash and its value the id (any other value is 1), as ``user_ids`` reads it back.
    """
    path = _field_path(user_id)
    if len(path.encode()) <= MAX_PATH_BYTES:
        return path, 1
    return f"`#sha256:{hashlib.sha256(user_id.encode()).hexdigest()}`", user_id


_ENCODED = re.compile("%(25|60)")


def _field_name(name: str) -> str:
    """The item id of a field name that :func:`_field_path` wrote."""
    return _ENCODED.sub(lambda m: "%" if m.group(1) == "25" else "`", name)


def discover_connstr(cfg: CouchbaseSettings, timeout_s: float = 2.0) -> str:
    """``couchbase://<host>:<kv port>`` read from the cluster manager's REST API.

    ``GET /pools/default/buckets/<bucket>`` lists each node's services (``nodesExt``); a real
    Couchbase Server answers it on 8091, the local runner's CouchbaseMock on its control port,
    which is the only way to learn the KV port the mock picked at start. The host we connect to
    is ours (``cfg.host``), whatever host the map names.
    """
    url = f"http://{cfg.host}:{cfg.control_port}/pools/default/buckets/{cfg.bucket}"
    response = httpx.get(url, auth=(cfg.username, cfg.password), timeout=timeout_s, trust_env=False)
    response.raise_for_status()
    kv_port = int(response.json()["nodesExt"][0]["services"]["kv"])
    return f"couchbase://{cfg.host}:{kv_port}"


def _discovered_connstr(cfg: CouchbaseSettings) -> str:
    try:
        return discover_connstr(cfg)
    except Exception as exc:
        raise StoreUnavailable(
            "couchbase: no couchbase.connstr configured (NRTREC_COUCHBASE__CONNSTR), and the "
            f"cluster manager at {cfg.host}:{cfg.control_port} did not say where its key-value "
            f"service is: {type(exc).__name__}: {exc}"
        ) from exc

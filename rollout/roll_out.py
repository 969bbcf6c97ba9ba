"""``nrtrec models rollout N``: a new encoder version from registered to serving, in steps.

1. ``index``: the version-N index on every shard, created *building* (``serving: false``):
   it takes the item job's deltas and answers look-ups, but nothing serves from it yet.
2. ``encoders``: N loaded on Triton next to the served versions. The item job publishes a
   delta for every served version, so from here on every listing change reaches index N.
3. ``bulk``: the catalogue read up to the marks and embedded with N into one snapshot per
   shard (``streaming.bulk``), after waiting out the item job's cached version list, so that
   every listing past the marks is one the item job encodes with N too.
4. ``loaded``: the snapshots swapped into every query node, which replay ``item-deltas``
   from the snapshots' offsets; done when every node has applied the topic up to where it
   ended after the swaps (``GET /healthz``'s ``offsets``).
5. ``users``: every known user gets an N vector from their stored recent items
   (``users.embed_users``), while N-1 keeps serving them.
6. ``promoted``: index N serving everywhere. The app now answers users from their N vectors,
   and the user job writes N vectors too (``streaming.serving_versions``).
7. ``caught_up``: after the app's and the user job's cached listings have expired, the users
   who clicked between the two passes get theirs redone, until a pass finds none (else the
   rollout exits 1, incomplete, and a rerun goes on passing).

``journal.json`` records the steps done; a rerun after a kill resumes after the last long one
(steps 1 and 2 are redone every time: they are cheap, and what they check may have changed).
Refused under settings no rollout can finish: a pinned ``inference.model_version``, or a user
store keeping one version per user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nrtrec.core.settings import Settings
from nrtrec.inference.client import open_encoder
from nrtrec.inference.client.triton import VERSIONS_TTL_S
from nrtrec.inference.lifecycle import ModelLifecycle
from nrtrec.query_node.client import BlockingQueryClient, QueryApiError
from nrtrec.rollout.errors import RolloutError
from nrtrec.rollout.journal import JournalFile, rollout_snapshots_dir
from nrtrec.rollout.retired import RetiredVersions
from nrtrec.rollout.users import Progress, UsersPass, embed_users
from nrtrec.schemas.query_api import CreateIndexRequest, IndexInfo, Metric
from nrtrec.schemas.snapshot import offset_key
from nrtrec.streaming.bulk import (
    BulkError,
    item_delta_marks,
    load_snapshots,
    read_manifest,
    run_bulk,
    shard_layout,
)
from nrtrec.streaming.errors import StreamingError
from nrtrec.streaming.item_lookup import ItemVectorLookup
from nrtrec.streaming.user_vectors import UserVectorWriter
from nrtrec.user_store import StoreError, UserVectorStore, open_store

log = logging.getLogger(__name__)

Say = Callable[[str], None]

# A catch-up pass that still finds users to redo is repeated, this many times at most.
CATCH_UP_PASSES = 5


@dataclass(frozen=True)
class RolloutReport:
    model_version: int
    resumed_after: str | None
    catalogue_items: int  # live listings when the bulk read them
    items_indexed: int  # index N's count at the end (through the gateway)
    users: int
    users_with_version: int
    # None of their recent items is in the version's index (not in the catalogue any more).
    users_without_vectors: int
    # The last user pass wrote nothing: every user's vector is as new as their clicks.
    settled: bool

    @property
    def complete(self) -> bool:
        counted = self.users_with_version + self.users_without_vectors >= self.users
        return self.settled and counted


class Rollout:
    def __init__(self, settings: Settings, lifecycle: ModelLifecycle, say: Say, progress: Progress):
        self.settings = settings
        self.lifecycle = lifecycle
        self.say = say
        self.progress = progress
        self.index_name = settings.query_node.index_name
        self.gateway = BlockingQueryClient.of(settings, timeout_s=30.0)

    def run(self, version: int) -> RolloutReport:
        self._check(version)
        # Rolled out again after a retire: `nrtrec up` may serve it again from now on.
        RetiredVersions(self.settings).discard(version)
        journal = JournalFile(self.settings, version)
        resumed = journal.resumed_after
        if resumed:
            self.say(f"resuming the rollout of v{version} after step {resumed!r}")
        # Cheap and safe to redo, so redone on every run: the journal may be older than what
        # happened since (an unload, a node that lost its index).
        self._create_index(version, serving=journal.journal.has("promoted"))
        journal.mark("index")
        self._load_encoders(version)
        journal.mark("encoders")
        if not journal.journal.has("bulk"):
            manifest_path = self._bulk(version)
            journal.mark("bulk", bulk_manifest=str(manifest_path))
        try:
            manifest = read_manifest(Path(journal.journal.bulk_manifest or ""))
        except BulkError as e:
            raise RolloutError(f"the bulk step's manifest: {e}") from None
        if not journal.journal.has("loaded"):
            self.say(f"loading the v{version} snapshots into every query node")
            try:
                load_snapshots(self.settings, manifest)
            except BulkError as e:
                raise RolloutError(str(e)) from None
            self._wait_deltas_applied(version)
            journal.mark("loaded")
        with _user_writer(self.settings) as (store, writer):
            users = self._users_pass(store, writer, version)
            journal.mark("users")
            if not journal.journal.has("promoted"):
                self.gateway.promote(self.index_name, version)
                self.say(f"v{version} promoted: the app and the user job serve it")
                journal.mark("promoted")
            # Both caches of the serving list expire, and a flushing batch lands.
            s = self.settings
            time.sleep(max(s.streaming.versions_ttl_s, s.app.versions_ttl_s) + 1.0)
            settled = False
            for _ in range(CATCH_UP_PASSES):
                users = self._users_pass(store, writer, version)
                if users.written == 0:
                    settled = True
                    break
            if settled:
                journal.mark("caught_up")
            else:
                self.say(
                    f"users still clicking faster than {CATCH_UP_PASSES} passes catch up: "
                    "rerun to finish"
                )
        return RolloutReport(
            model_version=version,
            resumed_after=resumed,
            catalogue_items=manifest.items,
            items_indexed=self._info(version).count,
            users=users.users,
            users_with_version=users.with_version,
            users_without_vectors=users.without_vectors,
            settled=settled,
        )

    def close(self) -> None:
        self.gateway.close()

    # ---- the steps --------------------------------------------------------------------------

    def _check(self, version: int) -> None:
        """Refuse what no rollout can finish: an unregistered version, or settings under which
        the old version's users would lose their vectors, or the new one never be written."""
        s = self.settings
        if version not in self.lifecycle.repository.versions():
            raise RolloutError(
                f"version {version} is not registered (nrtrec models train makes one; "
                f"registered: {self.lifecycle.repository.versions()})"
            )
        if s.inference.model_version is not None:
            raise RolloutError(
                f"inference.model_version pins v{s.inference.model_version}: the user job "
                "writes only that version; unset it (NRTREC_INFERENCE__MODEL_VERSION) first"
            )
        if s.user_store.keep_versions < 2:
            raise RolloutError(
                "user_store.keep_versions is 1: a user's new-version vector would replace the "
                "one being served before the new version serves; keep at least 2"
            )

    def _create_index(self, version: int, *, serving: bool) -> None:
        """``serving``: a rerun after the promote asks for a served index, so that a node that
        lost it does not declare it building again."""
        spec = CreateIndexRequest(
            dim=self.settings.inference.dim,
            metric=Metric.COSINE,
            model_version=version,
            serving=serving,
        )
        info, created = self.gateway.create_index(self.index_name, spec)
        state = "serving" if info.serving else "building"
        self.say(f"index {self.index_name} v{version} {'created' if created else 'there'}: {state}")

    def _load_encoders(self, version: int) -> None:
        if version not in self.lifecycle.served():
            self.say(f"loading encoder version {version} on Triton")
            self.lifecycle.load(version)
        self.say(f"Triton serves {sorted(self.lifecycle.served())}")

    def _bulk(self, version: int) -> Path:
        # The item job's encoder caches the served versions this long: once it has expired,
        # every listing past the bulk's marks is encoded with ``version`` as well.
        time.sleep(2 * VERSIONS_TTL_S + 0.5)
        out_dir = rollout_snapshots_dir(self.settings, version)
        self.say(f"embedding the catalogue with v{version} (snapshots in {out_dir})")
        try:
            manifest = run_bulk(self.settings, out_dir, version, self.progress)
        except BulkError as e:
            raise RolloutError(str(e)) from None
        self.say(f"v{version}: {manifest.items} items in {len(manifest.shards)} shard snapshots")
        return out_dir / "bulk.json"

    def _info(self, version: int) -> IndexInfo:
        for info in self.gateway.indexes():
            if info.name == self.index_name and info.model_version == version:
                return info
        raise RolloutError(f"the gateway does not list {self.index_name} v{version}")

    def _wait_deltas_applied(self, version: int, timeout_s: float = 120.0) -> None:
        """Until every query node has applied ``item-deltas`` up to where the topic ends now,
        after the swaps: the replay from the snapshots' offsets has then brought index
        ``version`` every change published before (counts alone can meet early, an add
        matching a delete)."""
        topic = self.settings.topics.item_deltas
        try:
            marks = item_delta_marks(self.settings)
            layout = shard_layout(self.settings)
        except BulkError as e:
            raise RolloutError(f"where item-deltas ends: {e}") from None
        pending = [
            (url, [p for p in layout.shard_map.partitions[shard] if marks.get(p, 0) > 0])
            for shard, urls in enumerate(layout.urls)
            for url in urls
        ]
        total = sum(marks[p] for _, parts in pending for p in parts)
        deadline = time.monotonic() + timeout_s
        while True:
            done, behind = 0, []
            for url, partitions in pending:
                offsets = self._applied(url)
                for p in partitions:
                    applied = min(offsets.get(offset_key(topic, p), 0), marks[p])
                    done += applied
                    if applied < marks[p]:
                        behind.append(f"{url} {topic}:{p} at {applied} of {marks[p]}")
            self.progress(f"deltas replayed (v{version})", done, total)
            if not behind:
                return
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"query nodes still replaying item-deltas after {timeout_s:.0f} s "
                    f"({'; '.join(behind[:4])}); are they consuming? rerun to resume"
                )
            time.sleep(0.5)

    def _applied(self, url: str) -> dict[str, int]:
        """The item-deltas offsets node ``url`` has applied; none while it does not answer."""
        try:
            with BlockingQueryClient(url, timeout_s=5.0, retries=0) as node:
                return node.node_health().offsets
        except QueryApiError as e:
            log.info("%s: %s; asked again", url, e)
            return {}

    def _users_pass(
        self, store: UserVectorStore, writer: UserVectorWriter, version: int
    ) -> UsersPass:
        try:
            return embed_users(
                store,
                writer,
                version,
                max_history=self.settings.inference.max_history,
                batch=self.settings.streaming.flush_size,
                progress=self.progress,
            )
        except (StoreError, QueryApiError, StreamingError) as e:
            raise RolloutError(f"user vectors v{version}: {e}; rerun to resume") from e


@contextmanager
def _user_writer(settings: Settings) -> Iterator[tuple[UserVectorStore, UserVectorWriter]]:
    """The store and the writer a user pass uses, opened and closed together."""
    store = open_store(settings)
    encoder = open_encoder(settings)
    items = ItemVectorLookup(
        BlockingQueryClient.of(settings, timeout_s=30.0, retries=3),
        settings.query_node.index_name,
        ttl_s=settings.streaming.item_cache_ttl_s,
        partial_wait_s=settings.streaming.item_lookup_wait_s,
    )
    try:
        yield store, UserVectorWriter(encoder, store, items)
    finally:
        items.close()
        encoder.close()
        store.close()


def roll_out(
    settings: Settings, version: int, lifecycle: ModelLifecycle, say: Say, progress: Progress
) -> RolloutReport:
    rollout = Rollout(settings, lifecycle, say, progress)
    try:
        return rollout.run(version)
    finally:
        rollout.close()

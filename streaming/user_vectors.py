"""The user-embedding job's work on one batch: histories in, stored user vectors out."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from nrtrec.inference.client import Encoder
from nrtrec.schemas import UserVector
from nrtrec.streaming.history import History
from nrtrec.streaming.item_lookup import ItemVectorLookup
from nrtrec.streaming.serving_versions import ServingVersions
from nrtrec.user_store import UserVectorStore


@dataclass(frozen=True)
class BatchReport:
    written: int
    stale: int
    without_vectors: int  # none of the user's recent items has a vector yet
    model_version: int | None


class UserVectorWriter:
    def __init__(
        self,
        encoder: Encoder,
        store: UserVectorStore,
        items: ItemVectorLookup,
        versions: ServingVersions | None = None,
    ):
        self.encoder = encoder
        self.store = store
        self.items = items
        self.versions = versions

    def write(self, histories: Mapping[str, History]) -> list[BatchReport]:
        """Encode every user's history with each serving version (``ServingVersions``; without
        one, the newest served encoder) and store the vectors, one report per version.

        Newest version first. Every put replaces the record's recent items, which are the items
        its newest vector was made from (``UserVectors``); written oldest first, a record would
        show the new recent items beside the newest version's previous vector until that
        version's own put, and a reader between the two (the app, or a test waiting for the
        recent items) would take the old vector for the new history."""
        versions = self.versions.current() if self.versions else [self.encoder.resolve(None)]
        return [self.write_version(histories, v) for v in sorted(versions, reverse=True)]

    def write_version(
        self,
        histories: Mapping[str, History],
        version: int,
        *,
        replace_recent: bool = True,
        create_users: bool = True,
    ) -> BatchReport:
        """Encode every user's history with ``version`` and store the vectors.

        A user whose recent items all lack vectors (listings not embedded yet) is skipped; the
        next click after they are embedded writes the vector. Encoder, store and item look-up
        failures (a shard that stayed unable to answer included) propagate: the job then
        restarts from its checkpoint and redoes the batch.
        ``replace_recent=False`` leaves the stored recent items as they are (a rollout writing
        vectors from them, while the job may be writing newer ones); ``create_users=False``
        writes only to users still stored (one deleted meanwhile counts as stale).
        """
        if not histories:
            return BatchReport(0, 0, 0, None)
        version = self.encoder.resolve(version)
        wanted = {item for h in histories.values() for item in h.item_ids}
        vectors = self.items.vectors(wanted, version)
        users, inputs = [], []
        for user_id, history in histories.items():
            known = [vectors[i] for i in history.item_ids if i in vectors]
            if known:
                users.append(user_id)
                inputs.append(known)
        written = stale = 0
        if users:
            embeddings = self.encoder.encode_users(inputs, version)
            now = int(time.time() * 1000)
            for user_id, vector in zip(users, embeddings.vectors, strict=True):
                history = histories[user_id]
                record = UserVector(
                    user_id=user_id,
                    model_version=embeddings.model_version,
                    vector=vector.tolist(),
                    source_ts=history.newest_ts,
                    updated_ts=now,
                )
                recent = history.item_ids if replace_recent else None
                if self.store.put(record, recent_items=recent, create=create_users):
                    written += 1
                else:
                    stale += 1
        return BatchReport(written, stale, len(histories) - len(users), version)

    def count_views(self, views: Mapping[tuple[int, str], int]) -> None:
        """Add the batch's views, counted by (UTC day of the click, item id): one
        ``add_views`` per day, so that each lands in its own day's popularity."""
        by_day: dict[int, Counter[str]] = defaultdict(Counter)
        for (day, item), n in views.items():
            by_day[day][item] += n
        for day, counts in sorted(by_day.items()):
            self.store.add_views(counts, day=day)
